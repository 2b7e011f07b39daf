/*
 * bench/dicom.c — reading a DICOM series with 1, 2, ... decoder processes (src/dicom.cpp), against one
 * decoder measured in the same run: the time per read and per slice, the speed-up, and a check that every
 * decoder count gives the same volume. Best of REPEATS reads each. Not a test.
 *
 * A compressed series (the shared totalseg_ct_dicom is JPEG 2000 lossless) is where decoders pay: its
 * slices take ~17 ms each to decode on one core. Uncompressed slices cost little more than the copy.
 *
 * usage: build/bench/dicom [SERIES_DIR] [MAX_READERS] [REPEATS]
 *        (defaults: ../shared/data/dicom/totalseg_ct_dicom, the CPUs OpenMP sees, 5)
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "volume.h"

/* Best of `repeats` reads with `readers` decoders; the last volume is left in v. */
static double time_read(const char *dir, int readers, int repeats, ls_volume *v) {
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        ls_error err = {0};
        double t0 = ls_now();
        if (ls_dicom_read(dir, NULL, readers, v, &err) != LS_OK) {
            fprintf(stderr, "bench/dicom: %s\n", err.msg);
            exit(2);
        }
        double t = ls_now() - t0;
        if (t < best) best = t;
        if (r + 1 < repeats) ls_volume_free(v);
    }
    return best;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "../shared/data/dicom/totalseg_ct_dicom";
    int max_readers = argc > 2 ? atoi(argv[2]) : omp_get_max_threads();
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (max_readers < 1 || repeats < 1) {
        fprintf(stderr, "usage: %s [SERIES_DIR] [MAX_READERS >= 1] [REPEATS >= 1]\n", argv[0]);
        return 2;
    }
    ls_volume one, v;
    double t1 = time_read(dir, 1, repeats, &one);
    long long slices = (long long)one.geom.dim[2];
    printf("%s: %lld slices of %lldx%lld, best of %d reads\n", dir, slices, (long long)one.geom.dim[0],
           (long long)one.geom.dim[1], repeats);
    printf("decoders  seconds  ms/slice  speed-up vs 1  same volume\n");
    printf("%8d  %7.3f  %8.2f  %13.2f  %s\n", 1, t1, 1e3 * t1 / (double)slices, 1.0, "-");
    int differ = 0;
    for (int k = 2; k <= max_readers; k++) {
        double t = time_read(dir, k, repeats, &v);
        int same = memcmp(&v.geom, &one.geom, sizeof v.geom) == 0 &&
                   memcmp(v.data, one.data, ls_volume_nvox(&one) * sizeof(float)) == 0;
        differ += !same;
        printf("%8d  %7.3f  %8.2f  %13.2f  %s\n", k, t, 1e3 * t / (double)slices, t1 / t, same ? "yes" : "NO");
        ls_volume_free(&v);
    }
    ls_volume_free(&one);
    return differ ? 1 : 0;
}
