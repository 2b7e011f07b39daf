/*
 * cmd_info.c — `livseg info FILE|DIR`: what a volume is, as livseg reads it; for a DICOM directory of
 * several series (a study) or echoes, what it holds, so that the user can pick one.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "volume.h"

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: livseg info [--series S] [--echo N] [--volume N] INPUT [INPUT ...]\n\n"
            "Prints what livseg reads from each input: format, voxel grid, spacing, data type and\n"
            "scaling, orientation (the letters say where each voxel axis points: R/L right/left,\n"
            "A/P anterior/posterior, S/I superior/inferior), the voxel-to-world affine (RAS+ mm),\n"
            "and the intensity range after scaling (Hounsfield units for CT).\n\n"
            "INPUT is a NIfTI file (.nii or .nii.gz, NIfTI-1 or -2) or a DICOM directory: one series,\n"
            "or a study's tree (subdirectories included). For a directory of several series, info\n"
            "lists them (number, description, modality, images, size, echoes, UID; headers only) and\n"
            "--series S reads the one whose SeriesNumber, SeriesDescription or SeriesInstanceUID is\n"
            "S; the same S picks it in livseg segment. A series of several echoes likewise, with\n"
            "--echo N (its EchoNumbers). A 4-D NIfTI file (a dynamic series) holds several volumes:\n"
            "info counts them (header only), and --volume N reads the N-th (1 is the first), as in\n"
            "livseg segment.\n"
            "Exit status 2 when an input cannot be read (one line on stderr says why).\n");
}

/* 3 "CT Body 3.0": CT, 20 images of 512x512, echoes 1 (2.3 ms), 2 (4.6 ms) */
static void print_series(const ls_dicom_series *s) {
    if (s->number[0]) printf("%s", s->number);
    if (s->description[0]) printf("%s\"%s\"", s->number[0] ? " " : "", s->description);
    if (!s->number[0] && !s->description[0]) printf("(no number or description)");
    printf(": %s, %d image%s", s->modality[0] ? s->modality : "modality unknown", s->images, s->images == 1 ? "" : "s");
    if (s->frames != s->images) printf(" (%d frames)", s->frames);
    printf(" of %dx%d", s->cols, s->rows);
    for (int k = 0; k < s->n_echoes && k < 16; k++)
        printf("%s%d (%.3g ms)", k ? ", " : ", echoes ", s->echo[k], s->echo_ms[k]);
    if (s->n_echoes > 16) printf(", ... (%d echoes)", s->n_echoes);
    printf("\n");
    if (s->uid[0]) printf("               UID %s\n", s->uid);
}

/* A study's series (or one series' echoes): what there is to pick from. */
static void print_listing(const char *path, const ls_dicom_series *s, int n) {
    printf("%s\n", path);
    if (n > 1)
        printf("  format       DICOM, %d series: --series S reads one (S: its number, description or UID)\n", n);
    else
        printf("  format       DICOM, one series of %d echoes: --echo N reads one\n", s[0].n_echoes);
    for (int i = 0; i < n; i++) {
        printf("  series %-5d ", i + 1);
        print_series(&s[i]);
    }
}

static void print_volume(const char *path, const ls_volume *v, const ls_dicom_series *series) {
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
    if (series) {
        printf("  series       ");
        print_series(series);
    }
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

/* A DICOM directory's volume and which series it is, read as ls_volume_read_dicom_pick reads it. */
static ls_status read_dicom(const char *dir, const ls_dicom_pick *pick, ls_volume *v, ls_dicom_series *series,
                            ls_error *err) {
    ls_dicom_job *job;
    ls_status s = ls_dicom_begin(dir, pick, omp_get_max_threads(), &job, err);
    return s ? s : ls_dicom_end(job, NULL, NULL, v, series, err);
}

/* A 4-D NIfTI file without --volume: how many volumes it holds, of which grid. */
static void print_volumes(const char *path, const ls_geom *g, int64_t n) {
    printf("%s\n", path);
    printf("  volumes      %lld of %lld x %lld x %lld voxels (4-D; --volume N reads one, 1 the first)\n", (long long)n,
           (long long)g->dim[0], (long long)g->dim[1], (long long)g->dim[2]);
}

/* A NIfTI file: its volume (--volume's, when given), or a 4-D file's count of volumes. */
static int info_file(const char *path, int volume) {
    ls_error err = {0};
    int64_t n = 1;
    ls_geom g;
    ls_volume v;
    if (!volume && ls_nifti_volumes(path, &n, &g, &err) == LS_OK && n > 1) {
        print_volumes(path, &g, n);
        return 0;
    }
    if ((volume ? ls_volume_read_nifti_volume(path, volume, &v, &err) : ls_volume_read(path, &v, &err)) != LS_OK)
        return cli_report(&err);
    print_volume(path, &v, NULL);
    ls_volume_free(&v);
    return 0;
}

/* One input: its volume, or for a DICOM directory with a choice to make and nothing picked, its listing.
 * 0, or 2 after one line on stderr. */
static int info_one(const char *path, const ls_dicom_pick *pick, int volume) {
    ls_error err = {0};
    ls_volume v;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        if (cli_pick_needs_directory("info", pick, path)) return 2;
        return info_file(path, volume);
    }
    if (volume) {
        fprintf(stderr, "livseg info: --volume picks a volume of a 4-D NIfTI file; %s is a directory\n", path);
        return 2;
    }
    /* Nothing picked: several series, or echoes, make the listing the answer (headers only). */
    if (!pick->series && !pick->echo) {
        ls_dicom_series *list;
        int n;
        if (ls_dicom_list(path, &list, &n, &err)) return cli_report(&err);
        int choice = n > 1 || list[0].n_echoes > 1;
        if (choice) print_listing(path, list, n);
        free(list);
        if (choice) return 0;
    }
    ls_dicom_series series;
    if (read_dicom(path, pick, &v, &series, &err)) return cli_report(&err);
    print_volume(path, &v, &series);
    ls_volume_free(&v);
    return 0;
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
    int n = 0, volume = 0; /* n: inputs, moved to the front of argv */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--series") || !strcmp(argv[i], "--echo") || !strcmp(argv[i], "--volume")) {
            if (i + 1 == argc) {
                fprintf(stderr, "livseg info: option %s needs a value\n", argv[i]);
                return 2;
            }
            if (argv[i][2] == 's') pick.series = argv[++i];
            else if (argv[i][2] == 'v' && !cli_int("info", argv[i], argv[i + 1], 1, 1 << 30, &volume)) return 2;
            else if (argv[i][2] == 'e' && !cli_int("info", argv[i], argv[i + 1], 1, 65535, &pick.echo)) return 2;
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
        int r = info_one(argv[i], &pick, volume);
        if (r) rc = r;
    }
    return rc;
}
