/*
 * cmd_probe.c — `livseg probe`: how much of the liver a teacher's frozen features carry linearly. Fits
 * a per-token logistic regression (src/probe.h) on the tokens of some datasets and scores it on others.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "probe.h"
#include "progress.h"
#include "util.h"

static void probe_usage(FILE *f) {
    fprintf(f,
            "usage: livseg probe [options] MANIFEST --fit DATASETS --test DATASETS\n\n"
            "Linear probe of a teacher: runs the frozen teacher over every slice of the cases (through the\n"
            "feature cache), labels each token liver when the mask covers at least half of its patch, fits\n"
            "an L2-regularised logistic regression on the --fit tokens and scores it on the --test tokens\n"
            "(Dice of the liver tokens, AUC, accuracy). A dataset in both lists is split as for training:\n"
            "its last --val-split cases are tested, the others fitted. Prints one line per set, then the\n"
            "results as one JSON line. Compare teachers with the same datasets, size and stride.\n\n"
            "examples:\n"
            "  livseg probe manifest.csv --fit btcv --test chaos_t2\n"
            "  livseg probe manifest.csv --fit chaos_t2 --test btcv --teacher run/teacher.safetensors --size 112\n\n"
            "options:\n"
            "  --fit DATASETS       comma-separated datasets whose tokens fit the probe\n"
            "  --test DATASETS      comma-separated datasets it is scored on\n"
            "  --val-split N        cases held out of a dataset in both lists (default 5)\n"
            "  --slice-stride N     use every N-th slice (default 1: all)\n"
            "  --l2 X               L2 penalty on the standardised weights (default 1)\n"
            "  --teacher FILE       teacher weights (.safetensors); default a random-initialised teacher\n"
            "  --arch NAME          architecture of a random teacher, or of a file that does not say\n"
            "                       (default vits16)\n"
            "  --teacher-seed N     seed of the random-initialised teacher (default 0)\n"
            "  --size PIXELS        teacher input size (default 224)\n"
            "  --cache DIR          feature cache (default livseg-cache)\n"
            "  --threads N          CPU threads (default: all cores)\n"
            "  --device D           cpu (default) or cuda\n"
            "  -q, --quiet          no progress bars\n");
}

typedef struct {
    const char *manifest, *device;
    char fit[256], test[256], teacher[1024], arch[16], cache[1024];
    int val_split, slice_stride, size, threads, quiet;
    uint64_t seed;
    float l2;
} probe_opts;

#define OPT(n, f, k) {n, k, offsetof(probe_opts, f), sizeof(((probe_opts *)0)->f)}
static const cli_option options[] = {
    OPT("--fit", fit, 's'), OPT("--test", test, 's'), OPT("--val-split", val_split, 'i'),
    OPT("--slice-stride", slice_stride, 'i'), OPT("--l2", l2, 'f'), OPT("--teacher", teacher, 's'),
    OPT("--arch", arch, 's'), OPT("--teacher-seed", seed, 'u'), OPT("--size", size, 'i'), OPT("--cache", cache, 's'),
    OPT("--threads", threads, 'i'),
};

static int bad(const char *what, const char *v) {
    fprintf(stderr, "livseg probe: %s '%s' (see livseg probe --help)\n", what, v);
    return 2;
}

static int parse(int argc, char **argv, probe_opts *o, int *done) {
    *o = (probe_opts){.device = "cpu", .arch = "vits16", .cache = "livseg-cache", .val_split = 5, .slice_stride = 1,
                      .size = 224, .l2 = 1};
    *done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) return probe_usage(stdout), *done = 1, 0;
        if (a[0] != '-') {
            if (o->manifest) return bad("more than one manifest:", a);
            o->manifest = a;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        const cli_option *opt = NULL;
        for (size_t k = 0; k < sizeof options / sizeof *options; k++)
            if (!strcmp(a, options[k].name)) opt = &options[k];
        if (!opt && strcmp(a, "--device")) return bad("unknown option", a);
        if (!v) return bad("option needs a value:", a);
        i++;
        if (!opt) {
            o->device = v;
        } else if (!cli_set_option("probe", o, opt, v)) {
            return 2;
        }
    }
    if (!o->manifest) return bad("no manifest given", "");
    if (!o->fit[0] || !o->test[0]) return bad("both --fit and --test are needed, for", o->manifest);
    if (!(o->l2 > 0)) {
        char v[32];
        snprintf(v, sizeof v, "%g", o->l2);
        return bad("--l2 must be above 0 (the fit needs it to be well posed), not", v);
    }
    return 0;
}

/* The case indices of one side. Test: ls_manifest_test_cases (a dataset also fitted gives its held-out
 * cases). Fit: every case of the --fit datasets that is not a test case. */
static ls_status side_cases(const ls_manifest *m, const probe_opts *o, int test_side, int *idx, int *n, ls_error *err) {
    if (test_side) return ls_manifest_test_cases(m, o->test, o->fit, o->val_split, idx, n, err);
    size_t sz = sizeof(int) * (size_t)m->n;
    int *test = malloc(sz), *all = malloc(sz), *none = malloc(sz), ntest, nall, nnone;
    LS_ASSERT(test && all && none);
    *n = 0;
    ls_status st = ls_manifest_test_cases(m, o->test, o->fit, o->val_split, test, &ntest, err);
    if (!st) st = ls_manifest_select(m, o->fit, 0, 0, all, &nall, none, &nnone, err);
    for (int k = 0; !st && k < nall; k++) {
        const ls_case *c = &m->cases[all[k]];
        int nd = 0, held = 0;
        for (int j = 0; j < m->n; j++) nd += !strcmp(m->cases[j].dataset, c->dataset);
        for (int j = 0; j < ntest; j++) held |= test[j] == all[k];
        if (ls_dataset_listed(o->test, c->dataset) && o->val_split >= nd)
            st = ls_fail(err, LS_ERR_INPUT, "%s: dataset %s has %d cases, too few to hold out %d", o->manifest,
                         c->dataset, nd, o->val_split);
        else if (!held)
            idx[(*n)++] = all[k];
    }
    free(test), free(all), free(none);
    return st;
}

typedef struct {
    int ncases;
    float *X;
    uint8_t *y;
    int64_t n;
    int dim;
    ls_probe_score score;
} side;

static ls_status side_load(side *s, const ls_manifest *m, const probe_opts *o, int test_side, ls_teacher *t,
                           progress_cases *ui, ls_error *err) {
    memset(s, 0, sizeof *s);
    int *idx = malloc(sizeof(int) * (size_t)m->n);
    LS_ASSERT(idx);
    ls_train_hooks hooks = {ui, progress_case_hook, NULL, NULL};
    ls_status st = side_cases(m, o, test_side, idx, &s->ncases, err);
    if (!st && !s->ncases) st = ls_fail(err, LS_ERR_INPUT, "%s: no %s cases", o->manifest, test_side ? "test" : "fit");
    if (!st) st = ls_train_tokens(m, idx, s->ncases, t, o->cache, o->slice_stride, &hooks, &s->X, &s->y, &s->n, &s->dim, err);
    free(idx);
    return st;
}

static ls_status side_score(side *s, const ls_probe *p, ls_error *err) {
    double *z = ls_calloc((size_t)s->n, sizeof *z, err);
    if (!z) return LS_ERR_NOMEM;
    ls_probe_logits(p, s->X, s->n, z);
    ls_status st = ls_probe_evaluate(z, s->y, s->n, &s->score, err);
    free(z);
    return st;
}

static void side_print(const char *what, const char *datasets, const side *s) {
    const ls_probe_score *r = &s->score;
    printf("%-4s %-20s %3d cases %9lld tokens %5.1f%% liver   Dice %.4f  AUC %.4f  accuracy %.4f\n", what, datasets,
           s->ncases, (long long)r->n, 100.0 * r->positives / (double)r->n, r->dice, r->auc, r->accuracy);
}

static void side_json(const char *what, const side *s) {
    printf("\"%s_cases\":%d,\"%s_tokens\":%lld,\"%s_liver\":%.5f,\"%s_dice\":%.5f,\"%s_auc\":%.5f,\"%s_accuracy\":%.5f", what,
           s->ncases, what, (long long)s->n, what, (double)s->score.positives / (double)s->n, what, s->score.dice, what,
           s->score.auc, what, s->score.accuracy);
}

static ls_status run(const probe_opts *o, const ls_manifest *m, ls_teacher *t, ls_error *err) {
    progress_cases ui = {.quiet = o->quiet};
    side fit, test;
    memset(&test, 0, sizeof test);
    ls_status st = side_load(&fit, m, o, 0, t, &ui, err);
    if (!st) st = side_load(&test, m, o, 1, t, &ui, err);
    ls_probe p = {0};
    double t0 = ls_now();
    if (!st) {
        if (!o->quiet) fprintf(stderr, "fitting the probe on %lld tokens of %d features\n", (long long)fit.n, fit.dim);
        st = ls_probe_fit(fit.X, fit.y, fit.n, fit.dim, o->l2, 50, &p, err);
    }
    double fit_s = ls_now() - t0;
    if (!st) st = side_score(&fit, &p, err);
    if (!st) st = side_score(&test, &p, err);
    if (!st) {
        side_print("fit", o->fit, &fit);
        side_print("test", o->test, &test);
        printf("{\"teacher\":\"%s\",\"size\":%d,\"dim\":%d,\"fit\":\"%s\",\"test\":\"%s\",\"slice_stride\":%d,\"l2\":%g,"
               "\"newton_steps\":%d,\"fit_seconds\":%.1f,",
               t->id, t->input_size, fit.dim, o->fit, o->test, o->slice_stride, o->l2, p.iterations, fit_s);
        side_json("fit", &fit);
        printf(",");
        side_json("test", &test);
        printf("}\n");
    }
    ls_probe_free(&p);
    free(fit.X), free(fit.y), free(test.X), free(test.y);
    return st;
}

int cmd_probe(int argc, char **argv) {
    probe_opts o;
    int done, rc = parse(argc, argv, &o, &done);
    if (rc || done) return rc;
    ls_error err = {0};
    ls_manifest m;
    if (ls_manifest_read(o.manifest, &m, &err)) return cli_report(&err);
    ls_device dev;
    ls_backend be;
    ls_teacher t;
    ls_status st = ls_device_parse(o.device, &dev, &err);
    if (!st) st = ls_backend_init(&be, dev, o.threads, &err);
    if (!st) {
        st = ls_teacher_open(&t, &be, o.teacher[0] ? o.teacher : NULL, o.arch, o.seed, o.size, &err);
        if (!st) {
            st = run(&o, &m, &t, &err);
            ls_teacher_close(&t);
        }
        ls_backend_free(&be);
    }
    ls_manifest_free(&m);
    return st ? cli_report(&err) : 0;
}
