/*
 * cmd_info.c — `livseg info FILE|DIR`: what a volume is, as livseg reads it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: livseg info [--series S] [--echo N] INPUT [INPUT ...]\n\n"
            "Prints what livseg reads from each input: format, voxel grid, spacing, data type and\n"
            "scaling, orientation (the letters say where each voxel axis points: R/L right/left,\n"
            "A/P anterior/posterior, S/I superior/inferior), the voxel-to-world affine (RAS+ mm),\n"
            "and the intensity range after scaling (Hounsfield units for CT).\n\n"
            "INPUT is a NIfTI file (.nii or .nii.gz, NIfTI-1 or -2) or a directory holding one DICOM\n"
            "series (subdirectories included). A directory holding several series (a whole study) is\n"
            "refused with a list of them; --series S reads the one whose SeriesNumber,\n"
            "SeriesDescription or SeriesInstanceUID is S. A series of several echoes likewise, with\n"
            "--echo N (its EchoNumbers).\n"
            "Exit status 2 when an input cannot be read (one line on stderr says why).\n");
}

static void print_volume(const char *path, const ls_volume *v) {
    const ls_geom *g = &v->geom;
    size_t n = ls_volume_nvox(v);
    double lo = INFINITY, hi = -INFINITY, sum = 0, sum2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = v->data[i];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
        sum2 += x * x;
    }
    double mean = sum / (double)n, sd = sqrt(fmax(0, sum2 / (double)n - mean * mean));
    char code[4];
    ls_affine_orient_code(g->affine, code);
    double sp[3];
    for (int j = 0; j < 3; j++)
        sp[j] = sqrt(g->affine[0][j] * g->affine[0][j] + g->affine[1][j] * g->affine[1][j] +
                     g->affine[2][j] * g->affine[2][j]);
    printf("%s\n", path);
    printf("  format       %s\n", v->format);
    printf("  dims         %lld x %lld x %lld voxels\n", (long long)g->dim[0], (long long)g->dim[1],
           (long long)g->dim[2]);
    printf("  spacing      %.4g x %.4g x %.4g mm (from the affine; pixdim %.4g x %.4g x %.4g)\n", sp[0],
           sp[1], sp[2], g->pixdim[1], g->pixdim[2], g->pixdim[3]);
    printf("  datatype     %s", ls_dtype_name(v->src_dtype));
    if (v->scl_slope != 0 && (v->scl_slope != 1 || v->scl_inter != 0))
        printf(", scaled by scl_slope %.6g and scl_inter %.6g", v->scl_slope, v->scl_inter);
    printf("\n");
    printf("  orientation  %s  (qform_code %d, sform_code %d; affine from %s)\n", code, g->qform_code,
           g->sform_code, g->sform_code > 0 ? "sform" : g->qform_code > 0 ? "qform" : "pixdim");
    for (int i = 0; i < 3; i++)
        printf("  %s % 10.4f % 10.4f % 10.4f % 10.4f\n", i == 0 ? "affine     " : "           ",
               g->affine[i][0], g->affine[i][1], g->affine[i][2], g->affine[i][3]);
    printf("  intensity    min %.6g, max %.6g, mean %.6g, std %.6g\n", lo, hi, mean, sd);
    printf("  volume       %.1f mL field of view\n", (double)n * sp[0] * sp[1] * sp[2] / 1000.0);
}

int cmd_info(int argc, char **argv) {
    if (argc < 2) {
        info_usage(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (cli_is_help(argv[i])) {
            info_usage(stdout);
            return 0;
        }
    ls_dicom_pick pick = {NULL, 0};
    int n = 0; /* inputs, moved to the front of argv */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--series") || !strcmp(argv[i], "--echo")) {
            if (i + 1 == argc) {
                fprintf(stderr, "livseg info: option %s needs a value\n", argv[i]);
                return 2;
            }
            if (argv[i][2] == 's') pick.series = argv[++i];
            else if (!cli_int("info", argv[i], argv[i + 1], 1, 65535, &pick.echo)) return 2;
            else i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "livseg info: unknown option '%s' (see livseg info --help)\n", argv[i]);
            return 2;
        } else {
            argv[n++] = argv[i];
        }
    }
    if (n == 0) {
        fprintf(stderr, "livseg info: no input given (see livseg info --help)\n");
        return 2;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        ls_error err = {0};
        ls_volume v;
        struct stat st;
        int dir = stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode);
        if (!dir && cli_pick_needs_directory("info", &pick, argv[i])) {
            rc = 2;
            continue;
        }
        ls_status s = dir ? ls_volume_read_dicom_pick(argv[i], &pick, &v, &err) : ls_volume_read(argv[i], &v, &err);
        if (s != LS_OK) {
            rc = cli_report(&err);
            continue;
        }
        print_volume(argv[i], &v);
        ls_volume_free(&v);
    }
    return rc;
}
