/*
 * gzip.h — whole-buffer gzip for volume files, through libdeflate (2-3x zlib's inflate speed, and
 * compression that parallelises).
 *
 * Reading: a .gz file's content is inflated member by member straight into the caller's buffer; files
 * libdeflate cannot take whole (content longer than the buffer) go through zlib's streaming reader.
 * Writing: the content is cut into fixed 1 MiB pieces, each compressed on its own thread into one gzip
 * member, written in order. A multi-member file is plain gzip (RFC 1952, section 2.2): zlib, gzip,
 * Python and nibabel read it whole. The pieces do not depend on the thread count, so neither do the bytes.
 */
#ifndef LS_GZIP_H
#define LS_GZIP_H

#include <stddef.h>
#include <stdio.h>

#include "livseg.h"

/* Inflates the first n content bytes of the gzip file `path` into out. A file whose content is shorter
 * fails with LS_ERR_INPUT ("truncated or corrupt"); content after the first n bytes is ignored. */
ls_status ls_gzip_read(const char *path, void *out, size_t n, ls_error *err);

/* Appends `n` bytes of `data` to f as gzip members at `level` (1-12; 6 is gzip's default). `path` names
 * f in errors. */
ls_status ls_gzip_write(FILE *f, const void *data, size_t n, int level, const char *path, ls_error *err);

#endif
