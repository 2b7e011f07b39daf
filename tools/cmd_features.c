/*
 * cmd_features.c — `livseg features`: run the frozen teacher over every axial slice of volumes and keep
 * the token features in the cache that training reads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "util.h"
#include "teacher.h"
#include "progress.h"

static void features_usage(FILE *f) {
    fprintf(f,
            "usage: livseg features [options] INPUT [INPUT ...]\n\n"
            "Runs the frozen teacher (a DINO ViT) over every axial slice of each input and stores the token\n"
            "features in the feature cache, so training computes them once. Prints, per input, the cache\n"
            "file and whether it was already there. INPUT is a NIfTI file or a DICOM series directory.\n\n"
            "options:\n"
            "  --cache DIR        feature cache directory (default: livseg-cache)\n"
            "  --teacher FILE     teacher weights (.safetensors, timm or Hugging Face names; convert DINO .pth\n"
            "                     checkpoints with tools/dino_to_safetensors.py); for a sharded model give any\n"
            "                     NAME-0000i-of-0000M.safetensors file; models/teacher.safetensors is one\n"
            "                     pretrained here (use --size 112). Default: a random-initialised teacher\n"
            "  --arch NAME        teacher architecture when the weights do not say: vits16 (default), vits8,\n"
            "                     vitb16, vitb8\n"
            "  --seed N           seed of the random-initialised teacher (default 0)\n"
            "  --size PIXELS      square teacher input, a multiple of the patch size (default 224)\n"
            "  --modality M       ct, mr or auto (default auto: a DICOM series' Modality tag, else CT\n"
            "                     when values reach -100 HU or below)\n"
            "  --batch N          slices per teacher call (default 8 on the CPU, 32 on a GPU)\n"
            "  --threads N        CPU threads (default: all cores)\n"
            "  --device D         cpu (default) or cuda\n"
            "  -q, --quiet        no progress bar\n");
}

typedef struct {
    const char *cache, *teacher, *arch, *modality, *device;
    int size, batch, threads, quiet;
    uint64_t seed;
} features_opts;

/* Parses options; returns the index of the first input, or -1 (usage printed, *rc set). */
static int parse(int argc, char **argv, features_opts *o, int *rc) {
    *o = (features_opts){"livseg-cache", NULL, "vits16", "auto", "cpu", 224, 0, 0, 0, 0};
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            features_usage(stdout);
            *rc = 0;
            return -1;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!v) break;
        if (!strcmp(a, "--cache")) o->cache = v;
        else if (!strcmp(a, "--teacher")) o->teacher = v;
        else if (!strcmp(a, "--arch")) o->arch = v;
        else if (!strcmp(a, "--modality")) o->modality = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--seed")) {
            if (!cli_seed("features", a, v, &o->seed)) return *rc = 2, -1;
        } else if (!strcmp(a, "--size")) {
            if (!cli_int("features", a, v, 1, 8192, &o->size)) return *rc = 2, -1;
        } else if (!strcmp(a, "--batch")) {
            if (!cli_int("features", a, v, 1, 4096, &o->batch)) return *rc = 2, -1;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_int("features", a, v, 0, 4096, &o->threads)) return *rc = 2, -1;
        } else break;
        i++;
    }
    if (i >= argc || argv[i][0] == '-') {
        if (i < argc) fprintf(stderr, "livseg features: unknown or incomplete option '%s'\n", argv[i]);
        else features_usage(stderr);
        *rc = 2;
        return -1;
    }
    return i;
}

static int one_input(const char *path, ls_teacher *t, const features_opts *o) {
    ls_error err = {0};
    ls_volume v, ras;
    if (ls_volume_read(path, &v, &err)) return cli_report(&err);
    ls_orient orient;
    ls_orient_from_geom(&v.geom, &orient);
    ls_status s = ls_volume_to_ras(&v, &orient, &ras, &err);
    ls_volume_free(&v);
    if (s) return cli_report(&err);
    ls_modality mod = ls_modality_guess(&ras);
    ls_prep prep;
    if (strcmp(o->modality, "auto") != 0) s = ls_modality_parse(o->modality, &mod, &err);
    if (!s) s = ls_prep_init(&prep, &ras, mod, t->input_size, t->input_size, &err);
    progress bar;
    progress_init(&bar, "teacher", "slices", o->quiet);
    ls_features f = {0};
    int hit = 0;
    double t0 = ls_now();
    if (!s) s = ls_features_cached(t, &ras, &prep, o->cache, o->batch, progress_update, &bar, &f, &hit, &err);
    char cpath[4096] = "";
    if (!s) s = ls_features_cache_path(o->cache, t, &ras, &prep, cpath, sizeof cpath, &err);
    if (!s)
        printf("%s: %s %d slices x %d x %dx%d (%s, %s) in %.1f s -> %s\n", path, hit ? "cached" : "computed", f.nslices,
               f.dim, f.gh, f.gw, ls_modality_name(mod), t->id, ls_now() - t0, cpath);
    ls_features_free(&f);
    ls_volume_free(&ras);
    return s ? cli_report(&err) : 0;
}

int cmd_features(int argc, char **argv) {
    features_opts o;
    int rc = 0, first = parse(argc, argv, &o, &rc);
    if (first < 0) return rc;
    ls_error err = {0};
    /* Before the teacher runs on the first input: options misplaced after the inputs, inputs that are not
     * there, a cache that cannot be a directory. */
    for (int i = first; i < argc; i++)
        if (argv[i][0] == '-') {
            fprintf(stderr, "livseg features: options go before the inputs, not '%s' (see livseg features --help)\n", argv[i]);
            return 2;
        }
    for (int i = first; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "livseg: %s: cannot open (%s)\n", argv[i], strerror(errno));
            return 2;
        }
    }
    if (ls_make_dir(o.cache, "feature cache", &err)) return cli_report(&err);
    ls_device dev;
    ls_backend be;
    if (ls_device_parse(o.device, &dev, &err) || ls_backend_init(&be, dev, o.threads, &err)) return cli_report(&err);
    ls_teacher t;
    if (ls_teacher_open(&t, &be, o.teacher, o.arch, o.seed, o.size, &err)) {
        ls_backend_free(&be);
        return cli_report(&err);
    }
    for (int i = first; i < argc; i++) {
        int r = one_input(argv[i], &t, &o);
        if (r) rc = r;
    }
    ls_teacher_close(&t);
    ls_backend_free(&be);
    return rc;
}
