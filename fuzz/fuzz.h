/*
 * fuzz.h — what the harnesses share: the input written to a file of their own (per process, under $TMPDIR),
 * since the readers under test take paths.
 */
#ifndef LS_FUZZ_H
#define LS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Writes data to DIR/livseg-fuzz-NAME-PID.EXT (DIR: $TMPDIR, else /tmp) and puts that path in path[n];
 * 0 when the file cannot be written (the input is then skipped). */
static inline int fuzz_write(const uint8_t *data, size_t size, const char *name, const char *ext, char *path, size_t n) {
    const char *tmp = getenv("TMPDIR");
    snprintf(path, n, "%s/livseg-fuzz-%s-%ld%s", tmp ? tmp : "/tmp", name, (long)getpid(), ext);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t put = fwrite(data, 1, size, f);
    return (fclose(f) == 0) & (put == size);
}

#endif
