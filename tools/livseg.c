/*
 * livseg.c — the `livseg` command: dispatches to the subcommands in tools/cmd_*.c.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ops.h"
#include "util.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"segment", cmd_segment, "segment the liver in a CT or MR volume (the main job)"},
    {"info", cmd_info, "print a volume's size, spacing, orientation and intensities"},
    {"features", cmd_features, "run the frozen teacher over every slice and cache its features"},
    {"train", cmd_train, "train the head and decoder on the labelled cases of a manifest"},
    {"experiment", cmd_experiment, "train, segment and evaluate a cross-domain protocol; write a report"},
    {"pretrain", cmd_pretrain, "pretrain a teacher ViT with DINO on the images of a manifest (no labels)"},
    {"probe", cmd_probe, "score a teacher: linear probe of liver vs not-liver on its frozen token features"},
    {"eval", cmd_eval, "compare predicted masks with references: Dice, ASSD, MSSD, volumes, t-test"},
};
static const int ncommands = (int)(sizeof commands / sizeof *commands);

static void usage(FILE *f) {
    fprintf(f,
            "livseg %s: liver segmentation of abdominal CT and MR volumes\n\n"
            "usage: livseg COMMAND [options] ...\n\ncommands:\n",
            LIVSEG_VERSION);
    for (int i = 0; i < ncommands; i++) fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f,
            "\nInputs are NIfTI files (.nii, .nii.gz) or DICOM series directories.\n"
            "Run `livseg COMMAND --help` for a command's options.\n"
            "\nenvironment:\n"
            "  LIVSEG_MODEL         segment's default model (else the one shipped with livseg: models/ of\n"
            "                       the repository it was built in, or PREFIX/share/livseg/models/)\n"
            "  LIVSEG_CUDA_TF32=1   --device cuda: GEMMs on TF32 tensor cores (faster, ~1e-3 relative error;\n"
            "                       =rn rounds their operands to nearest first; =0 keeps float32);\n"
            "                       LIVSEG_CUDA_BF16=1: bfloat16 (~1e-2). Unset, segment uses TF32 and every\n"
            "                       other command float32: docs/gpu.md has their effect on the masks.\n");
}

int cli_report(const ls_error *err) {
    fprintf(stderr, "livseg: %s\n", err->msg[0] ? err->msg : "unknown error");
    /* A request this machine cannot serve (no GPU) is the user's to change, like bad input. */
    if (err->code == LS_ERR_UNSUPPORTED) return 2;
    return err->code ? (int)err->code : 1;
}

/* The whole of v as an integer in [lo, hi]; 0 when it is anything else (overflow included). */
static int parse_integer(const char *v, long long lo, long long hi, long long *x) {
    char *end;
    errno = 0;
    *x = strtoll(v, &end, 10);
    return *v && !*end && !errno && *x >= lo && *x <= hi;
}

static int parse_option(void *settings, const cli_option *o, const char *v) {
    char *p = (char *)settings + o->off, *end;
    if (o->kind == 's') {
        if (strlen(v) >= o->size) return 0;
        snprintf(p, o->size, "%s", v);
        return 1;
    }
    if (o->kind == 'f') {
        *(float *)p = strtof(v, &end);
        return *v && !*end && isfinite(*(float *)p);
    }
    long long x;
    if (!parse_integer(v, 0, o->kind == 'i' ? INT_MAX : LLONG_MAX, &x)) return 0;
    if (o->kind == 'i') *(int *)p = (int)x;
    else *(uint64_t *)p = (uint64_t)x;
    return 1;
}

int cli_set_option(const char *cmd, void *settings, const cli_option *o, const char *v) {
    if (parse_option(settings, o, v)) return 1;
    const char *takes = o->kind == 'f'   ? "a finite number"
                        : o->kind == 'i' ? "a whole number from 0"
                        : o->kind == 'u' ? "a whole number from 0 (a seed)"
                                         : "a shorter text";
    fprintf(stderr, "livseg %s: %s takes %s, not '%s' (see livseg %s --help)\n", cmd, o->name, takes, v, cmd);
    return 0;
}

int cli_one_of(const char *arg, const char *const *names) {
    for (; *names; names++)
        if (!strcmp(arg, *names)) return 1;
    return 0;
}

int cli_pick_needs_directory(const char *cmd, const ls_dicom_pick *pick, const char *input) {
    if (!pick->series && !pick->echo) return 0;
    fprintf(stderr, "livseg %s: %s picks images of a DICOM directory; %s is not a directory\n", cmd,
            pick->series ? "--series" : "--echo", input);
    return 2;
}

int cli_over_input(const char *out, const char *in) {
    if (!ls_same_target(out, in)) return 0;
    fprintf(stderr, "livseg: %s: refusing to write over the input %s\n", out, in);
    return 2;
}

int cli_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out) {
    long long x;
    if (!parse_integer(v, lo, hi, &x)) {
        fprintf(stderr, "livseg %s: %s takes a whole number from %ld to %ld, not '%s'\n", cmd, opt, lo, hi, v);
        return 0;
    }
    *out = (int)x;
    return 1;
}

int cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, float *out) {
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "livseg %s: %s takes a number from %g to %g, not '%s'\n", cmd, opt, lo, hi, v);
        return 0;
    }
    *out = (float)x;
    return 1;
}

int cli_seed(const char *cmd, const char *opt, const char *v, uint64_t *out) {
    long long x;
    if (!parse_integer(v, 0, LLONG_MAX, &x)) {
        fprintf(stderr, "livseg %s: %s takes a whole number from 0 to %lld, not '%s'\n", cmd, opt, LLONG_MAX, v);
        return 0;
    }
    *out = (uint64_t)x;
    return 1;
}

int cli_is_help(const char *arg) { return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0; }

int main(int argc, char **argv) {
    ls_process_tune(argv); /* OpenBLAS's kernels, OpenMP's waiting: ops.h */
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("livseg %s\nOpenBLAS kernels: %s (%s)\n", LIVSEG_VERSION, ls_blas_core(), getenv("OPENBLAS_CORETYPE")
                   ? "set by OPENBLAS_CORETYPE" : "OpenBLAS's own choice");
        return 0;
    }
    for (int i = 0; i < ncommands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "livseg: unknown command '%s' (see livseg --help)\n", argv[1]);
    return 2;
}
