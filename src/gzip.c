/*
 * gzip.c — see gzip.h.
 */
#include "gzip.h"

#include <errno.h>
#include <libdeflate.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "util.h"

/* Content pieces per gzip member when writing. 1 MiB costs <1% in size against one member (deflate's
 * window is 32 KiB) and gives a 78 MB mask ~75 pieces to share among the threads. */
#define PIECE ((size_t)1 << 20)

/* zlib's streaming reader, for files libdeflate cannot inflate into n bytes. */
static ls_status read_zlib(const char *path, void *out, size_t n, ls_error *err) {
    gzFile g = gzopen(path, "rb");
    if (!g) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    gzbuffer(g, 1u << 20);
    size_t got = 0;
    while (got < n) {
        unsigned want = n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got);
        int r = gzread(g, (char *)out + got, want);
        if (r <= 0) break;
        got += (size_t)r;
    }
    gzclose(g);
    if (got < n)
        return ls_fail(err, LS_ERR_INPUT, "%s: voxel data could not be read (truncated or corrupt file)", path);
    return LS_OK;
}

/* Member by member into out. Returns LS_ERR_UNSUPPORTED (err untouched) when a member's content runs
 * past n, which libdeflate cannot stop at. */
static ls_status inflate_members(const char *path, const unsigned char *in, size_t in_n, unsigned char *out,
                                 size_t n, ls_error *err) {
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d) return ls_fail(err, LS_ERR_NOMEM, "%s: cannot allocate a decompressor", path);
    size_t pos = 0, got = 0;
    enum libdeflate_result r = LIBDEFLATE_SUCCESS;
    while (got < n && pos < in_n && r == LIBDEFLATE_SUCCESS) {
        size_t used = 0, made = 0;
        r = libdeflate_gzip_decompress_ex(d, in + pos, in_n - pos, out + got, n - got, &used, &made);
        if (r == LIBDEFLATE_SUCCESS) pos += used, got += made;
    }
    libdeflate_free_decompressor(d);
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE) return LS_ERR_UNSUPPORTED;
    if (r != LIBDEFLATE_SUCCESS || got < n)
        return ls_fail(err, LS_ERR_INPUT, "%s: voxel data could not be read (truncated or corrupt file)", path);
    return LS_OK;
}

ls_status ls_gzip_read(const char *path, void *out, size_t n, ls_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return ls_fail(err, LS_ERR_INPUT, "%s: cannot open (%s)", path, strerror(errno));
    /* Much more file than content means data after the voxels: stream rather than hold it all. */
    if ((size_t)st.st_size > n + n / 8 + ((size_t)1 << 20)) return read_zlib(path, out, n, err);
    char *in;
    size_t in_n;
    LS_TRY(ls_read_file(path, (size_t)st.st_size, &in, &in_n, err));
    ls_status s = inflate_members(path, (const unsigned char *)in, in_n, out, n, err);
    free(in);
    return s == LS_ERR_UNSUPPORTED ? read_zlib(path, out, n, err) : s;
}

ls_status ls_gzip_write(FILE *f, const void *data, size_t n, int level, const char *path, ls_error *err) {
    size_t pieces = n ? (n + PIECE - 1) / PIECE : 1; /* empty content: one empty member */
    int nth = omp_get_max_threads();
    if ((size_t)nth > pieces) nth = (int)pieces; /* a header is one piece: one compressor */
    size_t wave = (size_t)nth * 2 < pieces ? (size_t)nth * 2 : pieces;
    struct libdeflate_compressor **c = ls_calloc((size_t)nth, sizeof *c, err);
    size_t *len = ls_calloc(wave, sizeof *len, err);
    ls_status s = c && len ? LS_OK : LS_ERR_NOMEM;
    for (int t = 0; !s && t < nth; t++)
        if (!(c[t] = libdeflate_alloc_compressor(level)))
            s = ls_fail(err, LS_ERR_NOMEM, "%s: cannot allocate a level-%d compressor", path, level);
    size_t bound = s ? 0 : libdeflate_gzip_compress_bound(c[0], PIECE);
    unsigned char *buf = s ? NULL : ls_calloc(wave, bound, err);
    if (!s && !buf) s = LS_ERR_NOMEM;
    const unsigned char *src = data;
    for (size_t w0 = 0; !s && w0 < pieces; w0 += wave) {
        size_t nw = pieces - w0 < wave ? pieces - w0 : wave;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
        for (size_t p = 0; p < nw; p++) {
            size_t off = (w0 + p) * PIECE, sz = n - off < PIECE ? n - off : PIECE;
            len[p] = libdeflate_gzip_compress(c[omp_get_thread_num()], src + off, sz, buf + p * bound, bound);
        }
        for (size_t p = 0; !s && p < nw; p++) {
            LS_ASSERT(len[p] > 0); /* the bound is libdeflate's own worst case */
            if (fwrite(buf + p * bound, 1, len[p], f) != len[p])
                s = ls_fail(err, LS_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
        }
    }
    for (int t = 0; c && t < nth; t++) libdeflate_free_compressor(c[t]);
    free(c), free(len), free(buf);
    return s;
}
