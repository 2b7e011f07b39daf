/*
 * cmd_pretrain.c — `livseg pretrain`: pretrain a teacher ViT with DINO on the images of a manifest
 * (src/dino.h; docs/pretraining.md).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dino.h"
#include "progress.h"
#include "util.h"

static void usage(FILE *f) {
    ls_dino_config d, g;
    ls_dino_config_default(&d);
    ls_error err = {0};
    ls_dino_config_preset(&g, "gpu", &err);
    fprintf(f,
            "usage: livseg pretrain [options] MANIFEST -o DIR\n\n"
            "Pretrains a teacher ViT with DINO (self-distillation with no labels) on axial slices of the images\n"
            "of MANIFEST (labels are ignored; the label column may be absent). Each epoch writes\n"
            "DIR/teacher.safetensors (the EMA teacher, timm names, loadable by `livseg train --teacher`; split\n"
            "into teacher-0000i-of-0000M shards when over 15 MiB: give the first), DIR/state.safetensors (for\n"
            "--resume) and a line of DIR/pretrain.jsonl.\n"
            "A new run will not replace one in DIR: --resume it or give another DIR.\n\n"
            "  --preset NAME          cpu (default: %s, crops %d/%d, %d epochs) or gpu (%s, crops %d/%d,\n"
            "                         %d local, head %d/%d/%d, batch %d); options after it override it\n"
            "data:\n"
            "  --datasets LIST        comma-separated dataset names (default: every case)\n"
            "  --limit N              at most N cases per dataset (default 0: all)\n"
            "  --slices-per-epoch N   a random N slices per epoch (default %d; 0: all)\n"
            "  --source-size PIXELS   side of the stored slices crops are cut from (default %d)\n"
            "networks:\n"
            "  --arch NAME            vits16, vits8, vitb16, vitb8 or dDEPTHwWIDTHhHEADSpPATCH[gGRID]\n"
            "  --head-hidden N --head-bottleneck N --out-dim K   (default %d, %d, %d)\n"
            "crops:\n"
            "  --global-size PIXELS --local-size PIXELS --local-crops N   (default %d, %d, %d)\n"
            "optimisation:\n"
            "  --epochs N             length of the schedules (default %d)\n"
            "  --until N              stop after epoch N (continue later with --resume)\n"
            "  --batch N              slices per iteration (default %d)\n"
            "  --lr X                 peak AdamW learning rate after --warmup-epochs (default %g, %d epochs)\n"
            "  --min-lr X             (default %g)\n"
            "  --weight-decay X --weight-decay-end X   cosine schedule (default %g to %g)\n"
            "  --momentum-teacher X   EMA momentum, cosine to 1 (default %g)\n"
            "  --teacher-temp X --warmup-teacher-temp X --warmup-teacher-temp-epochs N  (default %g, %g, %d)\n"
            "  --clip-grad X          per-tensor gradient norm bound (default %g; 0: none)\n"
            "  --freeze-last-layer N  epochs without updates of the prototypes (default %d)\n"
            "run:\n"
            "  -o, --out DIR          output directory (created if absent)\n"
            "  --keep-every N         also keep every N-th epoch's teacher as DIR/teacher-eNNN.safetensors\n"
            "                         (default 0: only the latest); the DINO loss can climb back to ln K,\n"
            "                         and an earlier teacher be the better one (docs/pretraining.md)\n"
            "  --resume               continue the run in DIR (its settings are kept; only --until applies)\n"
            "  --seed N               (default %llu); the same seed and thread count give the same teacher\n"
            "  --threads N            CPU threads (default: all cores)\n"
            "  --device D             cpu (default) or cuda\n"
            "  -q, --quiet            no progress bar (epoch lines are still printed)\n",
            d.arch, d.global_size, d.local_size, d.epochs, g.arch, g.global_size, g.local_size, g.nlocal,
            g.head_hidden, g.head_bottleneck, g.out_dim, g.batch, d.slices_per_epoch, d.source_size, d.head_hidden,
            d.head_bottleneck, d.out_dim, d.global_size, d.local_size, d.nlocal, d.epochs, d.batch, d.lr,
            d.warmup_epochs, d.min_lr, d.weight_decay, d.weight_decay_end, d.momentum_teacher, d.teacher_temp,
            d.warmup_teacher_temp, d.warmup_teacher_temp_epochs, d.clip_grad, d.freeze_last_layer,
            (unsigned long long)d.seed);
}

typedef cli_option option;

#define OPT(n, f, k) {n, k, offsetof(ls_dino_config, f), sizeof(((ls_dino_config *)0)->f)}
static const option options[] = {
    OPT("--datasets", datasets, 's'), OPT("--limit", limit, 'i'), OPT("--slices-per-epoch", slices_per_epoch, 'i'),
    OPT("--source-size", source_size, 'i'), OPT("--arch", arch, 's'), OPT("--head-hidden", head_hidden, 'i'),
    OPT("--head-bottleneck", head_bottleneck, 'i'), OPT("--out-dim", out_dim, 'i'),
    OPT("--global-size", global_size, 'i'), OPT("--local-size", local_size, 'i'), OPT("--local-crops", nlocal, 'i'),
    OPT("--epochs", epochs, 'i'), OPT("--batch", batch, 'i'), OPT("--lr", lr, 'f'), OPT("--min-lr", min_lr, 'f'),
    OPT("--weight-decay", weight_decay, 'f'), OPT("--weight-decay-end", weight_decay_end, 'f'),
    OPT("--momentum-teacher", momentum_teacher, 'f'), OPT("--teacher-temp", teacher_temp, 'f'),
    OPT("--warmup-teacher-temp", warmup_teacher_temp, 'f'),
    OPT("--warmup-teacher-temp-epochs", warmup_teacher_temp_epochs, 'i'), OPT("--clip-grad", clip_grad, 'f'),
    OPT("--freeze-last-layer", freeze_last_layer, 'i'), OPT("--warmup-epochs", warmup_epochs, 'i'),
    OPT("--keep-every", keep_every, 'i'),
    OPT("--center-momentum", center_momentum, 'f'), OPT("--student-temp", student_temp, 'f'), OPT("--seed", seed, 'u'),
};

static int bad(const char *what, const char *v) {
    fprintf(stderr, "livseg pretrain: %s '%s' (see livseg pretrain --help)\n", what, v);
    return 2;
}


typedef struct {
    int quiet;
    progress prep;
} ui;

static void on_prepare(void *ctx, const char *id, int done, int total) {
    ui *u = ctx;
    (void)id;
    progress_update(&u->prep, done, total);
}

static void on_iter(void *ctx, const ls_dino_status *s) {
    ui *u = ctx;
    if (u->quiet) return;
    fprintf(stderr, "\repoch %d/%d  iteration %d/%d  loss %.4f  lr %.3g  %.1f images/s ", s->epoch, s->epochs,
            s->iters_done, s->iters, s->loss, s->lr, s->images_per_s);
    fflush(stderr);
}

static void on_epoch(void *ctx, const char *json) {
    ui *u = ctx;
    if (!u->quiet) fprintf(stderr, "\n");
    printf("%s\n", json);
    fflush(stdout);
}

int cmd_pretrain(int argc, char **argv) {
    ls_dino_config c;
    ls_dino_config_default(&c);
    const char *manifest = NULL, *out = NULL, *device = "cpu";
    int threads = 0, quiet = 0, resume = 0, until = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) return usage(stdout), 0;
        if (a[0] != '-') {
            if (manifest) return bad("more than one manifest", a);
            manifest = a;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (!strcmp(a, "--resume")) { resume = 1; continue; }
        const option *o = NULL;
        for (size_t k = 0; k < sizeof options / sizeof *options; k++)
            if (!strcmp(a, options[k].name)) o = &options[k];
        static const char *const others[] = {"--preset", "-o", "--out", "--device", "--threads", "--until", NULL};
        if (!o && !cli_one_of(a, others)) return bad("unknown option", a);
        if (!v) return bad("option needs a value:", a);
        i++;
        ls_error err = {0};
        if (o) {
            if (!cli_set_option("pretrain", &c, o, v)) return 2;
        } else if (!strcmp(a, "--preset")) {
            if (ls_dino_config_preset(&c, v, &err)) return bad("unknown preset", v);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--threads")) {
            if (!cli_int("pretrain", a, v, 0, 4096, &threads)) return 2;
        } else if (!strcmp(a, "--until")) {
            if (!cli_int("pretrain", a, v, 1, 1000000, &until)) return 2;
        }
    }
    if (!manifest) return bad("no manifest given", "");
    if (!out) return bad("no output directory given (-o DIR) for", manifest);
    ls_error err = {0};
    if (!resume && ls_dino_config_check(&c, &err)) return cli_report(&err);
    ls_manifest m;
    if (ls_manifest_read(manifest, &m, &err)) return cli_report(&err);
    ls_device dev;
    ls_backend be;
    if (ls_device_parse(device, &dev, &err) || ls_backend_init(&be, dev, threads, &err)) {
        ls_manifest_free(&m);
        return cli_report(&err);
    }
    ui u = {.quiet = quiet};
    progress_init(&u.prep, "reading scans", "cases", quiet);
    ls_dino_hooks hooks = {&u, on_prepare, on_iter, on_epoch};
    ls_status s = ls_dino_pretrain(&c, &m, out, resume, until, &be, &hooks, &err);
    ls_backend_free(&be);
    ls_manifest_free(&m);
    return s ? cli_report(&err) : 0;
}
