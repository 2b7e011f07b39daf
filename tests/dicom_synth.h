/*
 * dicom_synth.h — tiny synthetic DICOM files written by the tests themselves (explicit VR little
 * endian, 8x8 16-bit MR slices), for the cases the shared data lacks: several echoes in one series, an
 * enhanced (multi-frame) MR file.
 */
#ifndef LS_DICOM_SYNTH_H
#define LS_DICOM_SYNTH_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static inline int spill(const char *path, const unsigned char *buf, long n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(buf, 1, (size_t)n, f);
    fclose(f);
    return w == (size_t)n ? 0 : -1;
}

/* One explicit-VR-little-endian element; strings padded to even length. */
static inline size_t put_element(unsigned char *p, unsigned g, unsigned e, const char *vr, const void *val, size_t len) {
    size_t pad = len & 1, n = 0, total = len + pad;
    int long_form = !strcmp(vr, "OW") || !strcmp(vr, "OB") || !strcmp(vr, "SQ");
    unsigned char h[12] = {g & 255, g >> 8, e & 255, e >> 8, (unsigned char)vr[0], (unsigned char)vr[1]};
    if (long_form) h[8] = total & 255, h[9] = (total >> 8) & 255, h[10] = (total >> 16) & 255, h[11] = (unsigned char)(total >> 24);
    else h[6] = total & 255, h[7] = (total >> 8) & 255;
    memcpy(p, h, long_form ? 12 : 8), n += long_form ? 12 : 8;
    memcpy(p + n, val, len), n += len;
    if (pad) p[n++] = !strcmp(vr, "UI") ? 0 : ' ';
    return n;
}

static inline size_t put_str(unsigned char *p, unsigned g, unsigned e, const char *vr, const char *s) {
    return put_element(p, g, e, vr, s, strlen(s));
}

static inline size_t put_us(unsigned char *p, unsigned g, unsigned e, unsigned v) {
    unsigned char b[2] = {v & 255, v >> 8};
    return put_element(p, g, e, "US", b, 2);
}

/* A Part 10 file: preamble, "DICM", the file-meta group (`meta`, m bytes, its length element first) and
 * the data set (`ds`, n bytes). */
static inline int write_part10(const char *path, const unsigned char *meta, size_t m, const unsigned char *ds, size_t n) {
    static unsigned char buf[65536];
    uint32_t ml = (uint32_t)m;
    size_t k = 132;
    if (m + n + 150 > sizeof buf) return -1;
    memset(buf, 0, 128), memcpy(buf + 128, "DICM", 4);
    k += put_element(buf + k, 2, 0, "UL", &ml, 4);
    memcpy(buf + k, meta, m), k += m;
    memcpy(buf + k, ds, n), k += n;
    return spill(path, buf, (long)k);
}

/* A synthetic 8x8 MR slice at 2z mm of echo `echo` (EchoTime 2.3 * echo ms; 0: neither tag), every pixel
 * 100 * echo + z. */
static inline int write_echo_slice(const char *path, int z, int echo) {
    unsigned char meta[256], ds[1024];
    char s[64];
    size_t m = 0, n = 0;
    m += put_element(meta + m, 2, 1, "OB", "\0\1", 2);
    m += put_str(meta + m, 2, 2, "UI", "1.2.840.10008.5.1.4.1.1.4");
    snprintf(s, sizeof s, "1.2.3.4.7.%d.%d", z, echo);
    m += put_str(meta + m, 2, 3, "UI", s);
    m += put_str(meta + m, 2, 0x10, "UI", "1.2.840.10008.1.2.1");
    n += put_str(ds + n, 8, 0x16, "UI", "1.2.840.10008.5.1.4.1.1.4");
    n += put_str(ds + n, 8, 0x18, "UI", s);
    n += put_str(ds + n, 8, 0x60, "CS", "MR");
    n += put_str(ds + n, 0x18, 0x50, "DS", "2");
    if (echo > 0) { /* echo 0: no EchoTime nor EchoNumbers */
        snprintf(s, sizeof s, "%.1f", 2.3 * echo);
        n += put_str(ds + n, 0x18, 0x81, "DS", s);
        snprintf(s, sizeof s, "%d", echo);
        n += put_str(ds + n, 0x18, 0x86, "IS", s);
    }
    n += put_str(ds + n, 0x20, 0x0e, "UI", "1.2.3.4.8");
    n += put_str(ds + n, 0x20, 0x11, "IS", "5");
    snprintf(s, sizeof s, "-4\\-4\\%d", 2 * z);
    n += put_str(ds + n, 0x20, 0x32, "DS", s);
    n += put_str(ds + n, 0x20, 0x37, "DS", "1\\0\\0\\0\\1\\0");
    n += put_us(ds + n, 0x28, 2, 1);
    n += put_str(ds + n, 0x28, 4, "CS", "MONOCHROME2");
    n += put_us(ds + n, 0x28, 0x10, 8);
    n += put_us(ds + n, 0x28, 0x11, 8);
    n += put_str(ds + n, 0x28, 0x30, "DS", "1\\1");
    n += put_us(ds + n, 0x28, 0x100, 16);
    n += put_us(ds + n, 0x28, 0x101, 16);
    n += put_us(ds + n, 0x28, 0x102, 15);
    n += put_us(ds + n, 0x28, 0x103, 0);
    unsigned char px[128];
    for (int i = 0; i < 64; i++) px[2 * i] = (unsigned char)((100 * echo + z) & 255), px[2 * i + 1] = (unsigned char)((100 * echo + z) >> 8);
    n += put_element(ds + n, 0x7fe0, 0x10, "OW", px, sizeof px);
    return write_part10(path, meta, m, ds, n);
}

/* A sequence of one item holding `body` (an item's elements, len bytes): functional groups nest so. */
static inline size_t put_sq1(unsigned char *p, unsigned g, unsigned e, const unsigned char *body, size_t len) {
    unsigned char item[4096];
    if (len + 8 > sizeof item) return 0;
    unsigned char h[8] = {0xfe, 0xff, 0x00, 0xe0, len & 255, (len >> 8) & 255, (len >> 16) & 255, (unsigned char)(len >> 24)};
    memcpy(item, h, 8), memcpy(item + 8, body, len);
    return put_element(p, g, e, "SQ", item, len + 8);
}

/* An enhanced MR file (one file, `n` 8x8 frames, n <= 16) of series 7: frame k at z[k] mm (Per-frame
 * Functional Groups, in file order), every pixel 1000 + 10k stored; frame k rescaled by slope[k] when
 * `slope` is given (its own Pixel Value Transformation), else by none; with echo time te[k] ms when
 * `te` is given (its own MR Echo Sequence). Orientation and pixel spacing in the shared groups;
 * `per_frame` 0 leaves the per-frame groups out (frames that cannot be placed). */
static inline int write_enhanced_mr(const char *path, int n, const double *z, const double *slope, const double *te,
                                    int per_frame) {
    unsigned char meta[256], ds[32768], a[1024], b[1024], grp[8192], items[16384];
    char s[64];
    size_t m = 0, na, nb, ng, ni = 0;
    if (n > 16) return -1;
    m += put_element(meta + m, 2, 1, "OB", "\0\1", 2);
    m += put_str(meta + m, 2, 2, "UI", "1.2.840.10008.5.1.4.1.1.4.1");
    m += put_str(meta + m, 2, 3, "UI", "1.2.3.4.9.1");
    m += put_str(meta + m, 2, 0x10, "UI", "1.2.840.10008.1.2.1");
    size_t d = 0;
    d += put_str(ds + d, 8, 0x16, "UI", "1.2.840.10008.5.1.4.1.1.4.1");
    d += put_str(ds + d, 8, 0x18, "UI", "1.2.3.4.9.1");
    d += put_str(ds + d, 8, 0x60, "CS", "MR");
    d += put_str(ds + d, 0x20, 0x0e, "UI", "1.2.3.4.9");
    d += put_str(ds + d, 0x20, 0x11, "IS", "7");
    d += put_us(ds + d, 0x28, 2, 1);
    d += put_str(ds + d, 0x28, 4, "CS", "MONOCHROME2");
    snprintf(s, sizeof s, "%d", n);
    d += put_str(ds + d, 0x28, 8, "IS", s);
    d += put_us(ds + d, 0x28, 0x10, 8);
    d += put_us(ds + d, 0x28, 0x11, 8);
    d += put_us(ds + d, 0x28, 0x100, 16);
    d += put_us(ds + d, 0x28, 0x101, 16);
    d += put_us(ds + d, 0x28, 0x102, 15);
    d += put_us(ds + d, 0x28, 0x103, 0);
    /* Shared: Plane Orientation, Pixel Measures. */
    na = put_str(a, 0x20, 0x37, "DS", "1\\0\\0\\0\\1\\0");
    ng = put_sq1(grp, 0x20, 0x9116, a, na);
    nb = put_str(b, 0x18, 0x50, "DS", "2");
    nb += put_str(b + nb, 0x28, 0x30, "DS", "1\\1");
    ng += put_sq1(grp + ng, 0x28, 0x9110, b, nb);
    d += put_sq1(ds + d, 0x5200, 0x9229, grp, ng);
    if (per_frame) { /* Per-frame: Plane Position, Pixel Value Transformation; one item a frame */
        for (int f = 0; f < n; f++) {
            ng = 0;
            if (te) {
                na = put_element(a, 0x18, 0x9082, "FD", &te[f], 8); /* EffectiveEchoTime, binary */
                ng += put_sq1(grp + ng, 0x18, 0x9114, a, na);
            }
            snprintf(s, sizeof s, "-4\\-4\\%g", z[f]);
            na = put_str(a, 0x20, 0x32, "DS", s);
            ng += put_sq1(grp + ng, 0x20, 0x9113, a, na);
            if (slope) {
                nb = put_str(b, 0x28, 0x1052, "DS", "0");
                snprintf(s, sizeof s, "%g", slope[f]);
                nb += put_str(b + nb, 0x28, 0x1053, "DS", s);
                ng += put_sq1(grp + ng, 0x28, 0x9145, b, nb);
            }
            unsigned char h[8] = {0xfe, 0xff, 0x00, 0xe0, ng & 255, (ng >> 8) & 255, 0, 0};
            memcpy(items + ni, h, 8), memcpy(items + ni + 8, grp, ng), ni += 8 + ng;
        }
        d += put_element(ds + d, 0x5200, 0x9230, "SQ", items, ni);
    }
    unsigned char px[16 * 128];
    for (int f = 0; f < n; f++)
        for (int i = 0; i < 64; i++) px[f * 128 + 2 * i] = (unsigned char)((1000 + 10 * f) & 255), px[f * 128 + 2 * i + 1] = (unsigned char)((1000 + 10 * f) >> 8);
    d += put_element(ds + d, 0x7fe0, 0x10, "OW", px, (size_t)n * 128);
    return write_part10(path, meta, m, ds, d);
}

/* A new directory `dir` of `positions` x `echoes` such slices (im<z><echo>.dcm, echoes numbered from 1). */
static inline int write_echo_dir(const char *dir, int positions, int echoes) {
    char p[4200];
    if (strlen(dir) > 4096 || mkdir(dir, 0755) != 0) return -1;
    for (int z = 0; z < positions; z++)
        for (int e = 1; e <= echoes; e++) {
            snprintf(p, sizeof p, "%s/im%d%d.dcm", dir, z, e);
            if (write_echo_slice(p, z, e) != 0) return -1;
        }
    return 0;
}

#endif
