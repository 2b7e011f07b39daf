/*
 * cmd_train.c — `livseg train`: train the head and decoder on the cases of a manifest (src/train.h).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "progress.h"
#include "train.h"
#include "util.h"

static void train_usage(FILE *f) {
    ls_train_config d;
    ls_train_config_default(&d);
    fprintf(f,
            "usage: livseg train [options] MANIFEST -o DIR\n\n"
            "Trains the head and decoder on the labelled cases of MANIFEST (a CSV with columns case, dataset,\n"
            "modality, image, label, like ../shared/data/manifest.csv). The frozen teacher's features of\n"
            "every slice are computed once into the feature cache. Each epoch writes DIR/last.safetensors,\n"
            "DIR/best.safetensors (best validation Dice; use it with `livseg segment --model`),\n"
            "DIR/state.safetensors (for --resume) and appends one JSON line to DIR/train.jsonl.\n\n"
            "data:\n"
            "  --train DATASETS       comma-separated dataset names to train on (default %s)\n"
            "  --val-split N          last N cases of each dataset are held out for validation (default %d)\n"
            "  --limit N              use at most N training cases per dataset (default 0: all)\n"
            "  --slices-per-epoch N   a random N training slices per epoch (default %d; 0: all)\n"
            "  --balance              the same number of each epoch's slices from every dataset of --train\n"
            "                         (default: every slice equally likely; the dataset with most slices\n"
            "                         dominates, e.g. BTCV's CT over CHAOS's MR about 6 to 1)\n"
            "  --cache DIR            feature cache (default %s)\n"
            "teacher:\n"
            "  --teacher FILE         teacher weights (.safetensors); default a random-initialised teacher\n"
            "  --arch NAME            vits16 (default), vits8, vitb16, vitb8\n"
            "  --teacher-seed N       seed of the random-initialised teacher (default 0)\n"
            "  --size PIXELS          teacher input size (default %d)\n"
            "model and optimisation:\n"
            "  --preset NAME          cpu (default: decoder sized for CPU training, %d epochs) or paper\n"
            "                         (the paper's decoder at 32x the token grid, 150 epochs); options after\n"
            "                         it override it\n"
            "  --epochs N             epochs (default %d); with --resume, the total to reach\n"
            "  --batch N              slices per batch (default %d)\n"
            "  --lr X                 RAdam learning rate (default %g), reduced x%g after --patience epochs\n"
            "                         without a better validation Dice (default %d)\n"
            "  --weight-decay X       (default %g)\n"
            "  --code-dim N           width of the head's codes (default %d)\n"
            "  --widths A,B,C,D,E     decoder stage widths (default %d,%d,%d,%d,%d)\n"
            "  --skip-width N         width after the skip connection (default %d)\n"
            "  --up-stages N          how many decoder stages upsample x2, 1-5 (default %d: output %dx the grid)\n"
            "  --dropout P            channel dropout in the decoder (default %g)\n"
            "losses (weights; 0 switches a term off):\n"
            "  --focal W --tversky W --log-iou W --entropy W   (defaults %g, %g, %g, %g)\n"
            "  --contrastive W        contrastive distillation (default %g)\n"
            "  --no-contrastive       the same as --contrastive 0 (the ablation)\n"
            "  --b-self X --b-plus X --b-minus X   shifts b of the three terms (default %g, %g, %g)\n"
            "augmentation:\n"
            "  --no-augment           no augmentation (default: affine warp and intensity changes, each\n"
            "                         applied to half the slices)\n"
            "  --aug-rotate DEG       largest rotation (default %g)\n"
            "  --aug-zoom F           zoom within 1 +- F (default %g)\n"
            "  --aug-shift F          shift up to F of the half-width (default %g)\n"
            "  --aug-gamma G          gamma within [1/G, G] (default %g)\n"
            "  --aug-scale F          intensity scale within 1 +- F (default %g)\n"
            "  --aug-offset F         intensity offset within +-F of the [0, 1] range (default %g)\n"
            "  --aug-blur SIGMA       largest Gaussian blur in pixels (default %g)\n"
            "  --teacher-variants N   also train on N gamma variants of every training scan (0-%d, default %d):\n"
            "                         grey g -> g^gamma, which the teacher sees too (its features of each\n"
            "                         variant are cached like the scan's); items are drawn from the scan and\n"
            "                         its variants alike. For MR whose organs sit darker or brighter in the\n"
            "                         intensity window than in the training data\n"
            "  --teacher-gamma G      the variants' gammas span [1/G, G] (default %g; 2 variants: 1/G and G)\n"
            "run:\n"
            "  -o, --out DIR          output directory (created if absent; a new run will not replace one\n"
            "                         there: --resume it or give another DIR)\n"
            "  --resume               continue the run in DIR from its state file (its settings are kept;\n"
            "                         only --epochs applies)\n"
            "  --seed N               seed of initialisation, order, dropout and augmentation (default %llu);\n"
            "                         the same seed and thread count give the same model bit for bit\n"
            "  --threads N            CPU threads (default: all cores)\n"
            "  --device D             cpu (default) or cuda\n"
            "  -q, --quiet            no progress bars (epoch lines are still printed)\n",
            d.datasets, d.val_split, d.slices_per_epoch, d.cache_dir, d.input_size, d.epochs, d.epochs, d.batch, d.lr, d.lr_factor,
            d.patience, d.weight_decay, d.code_dim, d.widths[0], d.widths[1], d.widths[2], d.widths[3], d.widths[4],
            d.skip_width, d.up_stages, 1 << d.up_stages, d.dropout, d.w_focal, d.w_tversky, d.w_log_iou, d.w_entropy,
            d.w_cd, d.b_self, d.b_plus, d.b_minus, d.aug_rotate_deg, d.aug_zoom, d.aug_shift, d.aug_gamma, d.aug_scale,
            d.aug_offset, d.aug_blur, LS_TRAIN_MAX_VARIANTS, d.teacher_variants, d.teacher_gamma,
            (unsigned long long)d.seed);
}

typedef struct {
    const char *manifest, *out, *device;
    int threads, quiet, resume;
} run_opts;

typedef cli_option option;

#define OPT(n, f, k) {n, k, offsetof(ls_train_config, f), sizeof(((ls_train_config *)0)->f)}
static const option options[] = {
    OPT("--train", datasets, 's'), OPT("--val-split", val_split, 'i'), OPT("--limit", limit, 'i'),
    OPT("--slices-per-epoch", slices_per_epoch, 'i'), OPT("--cache", cache_dir, 's'), OPT("--teacher", teacher, 's'),
    OPT("--arch", arch, 's'), OPT("--teacher-seed", teacher_seed, 'u'), OPT("--size", input_size, 'i'),
    OPT("--epochs", epochs, 'i'), OPT("--batch", batch, 'i'), OPT("--lr", lr, 'f'),
    OPT("--weight-decay", weight_decay, 'f'), OPT("--patience", patience, 'i'), OPT("--code-dim", code_dim, 'i'),
    OPT("--skip-width", skip_width, 'i'), OPT("--up-stages", up_stages, 'i'), OPT("--dropout", dropout, 'f'),
    OPT("--focal", w_focal, 'f'), OPT("--tversky", w_tversky, 'f'), OPT("--log-iou", w_log_iou, 'f'),
    OPT("--entropy", w_entropy, 'f'), OPT("--contrastive", w_cd, 'f'), OPT("--b-self", b_self, 'f'),
    OPT("--b-plus", b_plus, 'f'), OPT("--b-minus", b_minus, 'f'), OPT("--seed", seed, 'u'),
    OPT("--aug-rotate", aug_rotate_deg, 'f'), OPT("--aug-zoom", aug_zoom, 'f'), OPT("--aug-shift", aug_shift, 'f'),
    OPT("--aug-gamma", aug_gamma, 'f'), OPT("--aug-scale", aug_scale, 'f'), OPT("--aug-offset", aug_offset, 'f'),
    OPT("--aug-blur", aug_blur, 'f'), OPT("--teacher-variants", teacher_variants, 'i'),
    OPT("--teacher-gamma", teacher_gamma, 'f'),
};

/* Sets an option's field from its text; 0 when the value does not parse. */

static int bad(const char *cmd, const char *what, const char *v) {
    fprintf(stderr, "livseg %s: %s '%s' (see livseg %s --help)\n", cmd, what, v, cmd);
    return 2;
}

int train_option(const char *cmd, ls_train_config *c, int argc, char **argv, int *i) {
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--no-contrastive")) return c->w_cd = 0, 1;
    if (!strcmp(a, "--no-augment")) return c->augment = 0, 1;
    if (!strcmp(a, "--balance")) return c->balance = 1, 1;
    const option *o = NULL;
    for (size_t k = 0; k < sizeof options / sizeof *options; k++)
        if (!strcmp(a, options[k].name)) o = &options[k];
    if (!o && strcmp(a, "--preset") && strcmp(a, "--widths")) return 0;
    if (!v) return -bad(cmd, "option needs a value:", a);
    ++*i;
    if (!strcmp(a, "--preset")) {
        ls_error err = {0};
        if (ls_train_config_preset(c, v, &err)) return -bad(cmd, "unknown preset", v);
    } else if (!strcmp(a, "--widths")) {
        int *w = c->widths;
        char end;
        if (sscanf(v, "%d,%d,%d,%d,%d%c", &w[0], &w[1], &w[2], &w[3], &w[4], &end) != 5)
            return -bad(cmd, "--widths needs five comma-separated numbers, not", v);
    } else if (!cli_set_option(cmd, c, o, v)) {
        return -2;
    }
    return 1;
}

/* Returns 0 to go on, else the exit status (help printed: 0 through *done). */
static int parse(int argc, char **argv, ls_train_config *c, run_opts *r, int *done) {
    *r = (run_opts){NULL, NULL, "cpu", 0, 0, 0};
    ls_train_config_default(c);
    *done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            train_usage(stdout);
            *done = 1;
            return 0;
        }
        if (a[0] != '-') {
            if (r->manifest) return bad("train", "more than one manifest", a);
            r->manifest = a;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { r->quiet = 1; continue; }
        if (!strcmp(a, "--resume")) { r->resume = 1; continue; }
        int t = train_option("train", c, argc, argv, &i);
        if (t < 0) return -t;
        if (t) continue;
        static const char *const own[] = {"-o", "--out", "--device", "--threads", NULL};
        if (!cli_one_of(a, own)) return bad("train", "unknown option", a);
        if (!v) return bad("train", "option needs a value:", a);
        i++;
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) r->out = v;
        else if (!strcmp(a, "--device")) r->device = v;
        else if (!strcmp(a, "--threads")) {
            if (!cli_int("train", a, v, 0, 4096, &r->threads)) return 2;
        }
    }
    if (!r->manifest) return bad("train", "no manifest given", "");
    if (!r->out) return bad("train", "no output directory given (-o DIR) for", r->manifest);
    return 0;
}

/* ------------------------------------------------------------------ progress */

typedef struct {
    int quiet;
    progress_cases prep;
} train_ui;

static void on_prepare(void *ctx, const char *id, int64_t done, int64_t total) {
    progress_case(&((train_ui *)ctx)->prep, id, done, total);
}

static void on_batch(void *ctx, const ls_train_status *s) {
    train_ui *u = ctx;
    if (!u->quiet) progress_train(s);
}

static void on_epoch(void *ctx, const char *json) {
    train_ui *u = ctx;
    if (!u->quiet) fprintf(stderr, "\n");
    printf("%s\n", json);
    fflush(stdout);
}

int cmd_train(int argc, char **argv) {
    ls_train_config c;
    run_opts r;
    int done, rc = parse(argc, argv, &c, &r, &done);
    if (rc || done) return rc;
    ls_error err = {0};
    ls_manifest m;
    if (ls_manifest_read(r.manifest, &m, &err)) return cli_report(&err);
    ls_device dev;
    ls_backend be;
    if (ls_device_parse(r.device, &dev, &err) || ls_backend_init(&be, dev, r.threads, &err)) {
        ls_manifest_free(&m);
        return cli_report(&err);
    }
    train_ui ui = {.quiet = r.quiet, .prep.quiet = r.quiet};
    ls_train_hooks hooks = {&ui, on_prepare, on_batch, on_epoch};
    ls_status s = ls_train(&c, &m, r.out, r.resume, &be, &hooks, &err);
    ls_backend_free(&be);
    ls_manifest_free(&m);
    return s ? cli_report(&err) : 0;
}
