/*
 * cmd_experiment.c — `livseg experiment`: one source -> target protocol from a manifest, end to end:
 * train (with, and with --ablation also without, the contrastive loss), segment every test case with
 * each model's best checkpoint, evaluate against the labels, and write a report.
 *
 * Test cases: every case of a --test dataset that is not trained on; for a dataset that is also trained
 * on, its held-out cases (the last --val-split of the manifest), as the paper's mixed-source protocol.
 * Output directory:
 *   VARIANT/model/...            the training run (resumable: an existing run continues to --epochs)
 *   VARIANT/pred/CASE.nii.gz     predicted masks
 *   cases.csv                    one line per case and variant: Dice, ASSD, MSSD, volumes, the flags of
 *                                segment's review of the mask (src/review.h)
 *   report.md                    the protocol, teacher, settings, summary table, paired t-tests, cases
 *   dice.svg                     box plot of Dice per variant and target dataset
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include "cli.h"
#include "metrics.h"
#include "progress.h"
#include "segment.h"
#include "util.h"
#include "volume.h"

#define MAX_VARIANTS 2

static void experiment_usage(FILE *f) {
    fprintf(f,
            "usage: livseg experiment [options] MANIFEST [--train DATASETS] --test DATASETS -o DIR\n\n"
            "Runs a cross-domain protocol: trains on DATASETS of --train (holding out --val-split cases of\n"
            "each for validation), segments every case of the --test datasets with the best checkpoint\n"
            "(for a dataset also trained on: its held-out cases only), evaluates Dice, ASSD and MSSD\n"
            "against the labels, and writes DIR/report.md, DIR/cases.csv and DIR/dice.svg.\n\n"
            "examples:\n"
            "  livseg experiment manifest.csv --train btcv --test chaos_t2 -o exp/btcv-to-chaos --ablation\n"
            "  livseg experiment manifest.csv --train btcv,chaos_t2 --test btcv,chaos_t2 -o exp/mixed\n\n"
            "options:\n"
            "  --test DATASETS   comma-separated datasets to test on\n"
            "  --ablation        also train and test without the contrastive loss, with paired t-tests\n"
            "  -o DIR            output directory; an interrupted experiment continues where it stopped\n"
            "                    (with the same settings: other settings there are refused, naming one)\n"
            "  --threads N       CPU threads (default: all cores)\n"
            "  --device D        cpu (default) or cuda\n"
            "  -q, --quiet       no progress bars\n"
            "and every training option of `livseg train` but --resume (--train, default btcv; --val-split,\n"
            "--limit, --epochs, --preset, --teacher, --cache, --seed, ...), which apply to each variant.\n");
}

typedef struct {
    const char *manifest, *out, *device, *test;
    int threads, quiet, ablation;
} exp_opts;

typedef struct {
    int case_index, variant;
    ls_metrics m;
    unsigned review; /* ls_review_flag bits */
} result;

static int parse(int argc, char **argv, ls_train_config *c, exp_opts *o, int *done) {
    *o = (exp_opts){NULL, NULL, "cpu", NULL, 0, 0, 0};
    ls_train_config_default(c);
    *done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            experiment_usage(stdout);
            *done = 1;
            return 0;
        }
        if (a[0] != '-') {
            if (o->manifest) return fprintf(stderr, "livseg experiment: more than one manifest: '%s'\n", a), 2;
            o->manifest = a;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) { o->quiet = 1; continue; }
        if (!strcmp(a, "--ablation")) { o->ablation = 1; continue; }
        int t = train_option("experiment", c, argc, argv, &i);
        if (t < 0) return -t;
        if (t) continue;
        static const char *const own[] = {"-o", "--out", "--test", "--device", "--threads", NULL};
        if (!cli_one_of(a, own))
            return fprintf(stderr, "livseg experiment: %s '%s' (see --help)\n",
                           strcmp(a, "--resume") ? "unknown option" : "an experiment continues by itself; no option", a), 2;
        if (!v) return fprintf(stderr, "livseg experiment: option needs a value: '%s'\n", a), 2;
        i++;
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) o->out = v;
        else if (!strcmp(a, "--test")) o->test = v;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--threads")) {
            if (!cli_int("experiment", a, v, 0, 4096, &o->threads)) return 2;
        }
    }
    if (!o->manifest || !o->out || !o->test) {
        fprintf(stderr, "livseg experiment: needs MANIFEST, --test DATASETS and -o DIR (see --help)\n");
        return 2;
    }
    return 0;
}

typedef struct {
    int quiet;
    progress bar; /* segmentation */
    progress_cases prep;
} exp_ui;

static void on_prepare(void *ctx, const char *id, int64_t done, int64_t total) {
    progress_case(&((exp_ui *)ctx)->prep, id, done, total);
}

static void on_batch(void *ctx, const ls_train_status *s) {
    exp_ui *u = ctx;
    if (!u->quiet) progress_train(s);
}

static void on_epoch(void *ctx, const char *json) {
    exp_ui *u = ctx;
    fprintf(stderr, "%s%s\n", u->quiet ? "" : "\n", json);
}

/* Segments one case with a loaded model and evaluates it; the mask goes to `pred_path`. */
static ls_status segment_case(const ls_case *cs, ls_teacher *t, ls_model *m, const char *pred_path, exp_ui *ui,
                              result *out, ls_error *err) {
    ls_volume img, ref;
    ls_geom grid;
    LS_TRY(ls_volume_read_ras(cs->image, &img, &grid, err));
    ls_status s = ls_volume_read(cs->label, &ref, err);
    if (s) {
        ls_volume_free(&img);
        return s;
    }
    ls_segment_opts o;
    ls_segment_opts_default(&o);
    o.modality = (int)cs->modality, o.keep_prob = 0;
    char label[96];
    snprintf(label, sizeof label, "segment %s", cs->id);
    progress_init(&ui->bar, label, "slices", ui->quiet);
    ls_segment_result r = {0};
    s = ls_segment_ras(&img, &grid, t, m, &o, progress_update, &ui->bar, &r, err);
    ls_volume pred = {0};
    if (!s) s = ls_segment_write_mask(pred_path, &r, cs->image, err);
    if (!s) s = ls_segment_mask_volume(&r, &pred, err);
    if (!s) s = ls_metrics_volumes(&pred, &ref, pred_path, cs->label, &out->m, err);
    out->review = r.review.flags;
    ls_volume_free(&pred);
    ls_segment_result_free(&r);
    ls_volume_free(&img), ls_volume_free(&ref);
    return s;
}

/* Each test case's label on its image's grid, from the NIfTI headers alone (a DICOM series is checked when
 * it is read): a mismatch would otherwise surface after training. */
static ls_status check_test_grids(const ls_manifest *m, const int *tests, int nt, ls_error *err) {
    for (int i = 0; i < nt; i++) {
        const ls_case *c = &m->cases[tests[i]];
        ls_geom gi, gl;
        ls_error e = {0};
        ls_status s = ls_volume_read_geom(c->image, &gi, &e);
        if (s == LS_ERR_UNSUPPORTED) continue;
        if (s) return *err = e, s;
        LS_TRY(ls_volume_read_geom(c->label, &gl, err));
        LS_TRY(ls_geom_same_grid(&gl, &gi, c->label, c->image, err));
    }
    return LS_OK;
}

static ls_status run_variant(const ls_train_config *c, const ls_manifest *m, const char *dir, const int *tests, int nt,
                             const ls_backend *be, exp_ui *ui, result *res, int variant, ls_error *err) {
    char model_dir[4400], pred_dir[4400], best[4500], pred[4600];
    snprintf(model_dir, sizeof model_dir, "%s/model", dir);
    snprintf(pred_dir, sizeof pred_dir, "%s/pred", dir);
    LS_TRY(ls_make_dir(dir, "output", err));
    LS_TRY(ls_make_dir(pred_dir, "output", err));
    snprintf(best, sizeof best, "%s/state.safetensors", model_dir);
    struct stat st;
    int resume = stat(best, &st) == 0;
    if (resume) LS_TRY(ls_train_continues(c, model_dir, err)); /* before saying so */
    ls_train_hooks hooks = {ui, on_prepare, on_batch, on_epoch};
    fprintf(stderr, "%s: %s training on %s\n", dir, resume ? "continuing" : "starting", c->datasets);
    LS_TRY(ls_train(c, m, model_dir, resume, be, &hooks, err));
    snprintf(best, sizeof best, "%s/best.safetensors", model_dir);
    ls_model model;
    ls_model_info info;
    ls_teacher t;
    LS_TRY(ls_model_load(&model, &info, be, best, err));
    ls_status s = ls_segment_teacher(&t, be, &model, &info, c->teacher[0] ? c->teacher : NULL, best, err);
    for (int i = 0; !s && i < nt; i++) {
        const ls_case *cs = &m->cases[tests[i]];
        snprintf(pred, sizeof pred, "%s/%s.nii.gz", pred_dir, cs->id);
        res[i].case_index = tests[i], res[i].variant = variant;
        s = segment_case(cs, &t, &model, pred, ui, &res[i], err);
        if (!s) fprintf(stderr, "  %s: Dice %.4f  ASSD %.2f mm  MSSD %.1f mm\n", cs->id, res[i].m.dice, res[i].m.assd_mm,
                        res[i].m.mssd_mm);
    }
    if (!s) ls_teacher_close(&t);
    ls_model_free(&model);
    return s;
}

/* ------------------------------------------------------------------ report */

static double metric_of(const ls_metrics *m, int which) { return which == 0 ? m->dice : which == 1 ? m->assd_mm : m->mssd_mm; }

static const char *variant_name(int v) { return v == 0 ? "with contrastive loss" : "without contrastive loss (ablation)"; }

/* Quartiles by linear interpolation of sorted values. */
static double quantile(double *v, int n, double q) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1], v[j - 1] = t;
        }
    double pos = q * (n - 1);
    int lo = (int)pos;
    return lo + 1 < n ? v[lo] + (pos - lo) * (v[lo + 1] - v[lo]) : v[lo];
}

/* Box plot of Dice per (variant, target dataset) group (the first 16 groups), as SVG; NULL when out of
 * memory. */
static char *box_svg(const ls_manifest *m, const result *res, int nt, int nv, const char *test) {
    char groups[16][96];
    double *vals = malloc(sizeof(double) * 16 * (size_t)(nt + 1)); /* group g's values at vals + g * nt */
    int counts[16] = {0}, ng = 0;
    char list[1024];
    if (!vals) return NULL;
    for (int v = 0; v < nv; v++) {
        snprintf(list, sizeof list, "%s", test);
        for (char *save = NULL, *ds = strtok_r(list, ",", &save); ds && ng < 16; ds = strtok_r(NULL, ",", &save)) {
            snprintf(groups[ng], sizeof groups[ng], "%s%s", ds, v ? " (no CD)" : "");
            for (int i = 0; i < nt; i++) {
                const result *r = &res[v * nt + i];
                if (!strcmp(m->cases[r->case_index].dataset, ds)) vals[(size_t)ng * nt + counts[ng]++] = r->m.dice;
            }
            ng++;
        }
    }
    int W = 120 + 110 * ng, H = 320, top = 20, bot = 270;
    /* A growing buffer: a fixed one sized per group overflowed at about 170 cases in a group. */
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    if (!f) return free(vals), NULL;
#define OUT(...) fprintf(f, __VA_ARGS__)
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    for (int t = 0; t <= 10; t += 2) {
        double y = bot - (bot - top) * t / 10.0;
        OUT("<line x1=\"60\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/><text x=\"52\" y=\"%.1f\" "
            "text-anchor=\"end\">%.1f</text>\n", W - 20, y, y, y + 4, t / 10.0);
    }
    OUT("<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">Dice</text>\n", (top + bot) / 2,
        (top + bot) / 2);
    for (int g = 0; g < ng; g++) {
        double x = 120 + 110 * g;
        OUT("<text x=\"%.0f\" y=\"%d\" text-anchor=\"middle\">%s (n=%d)</text>\n", x, bot + 20, groups[g], counts[g]);
        if (!counts[g]) continue;
        double *gv = vals + (size_t)g * nt;
        double q0 = quantile(gv, counts[g], 0), q1 = quantile(gv, counts[g], 0.25), q2 = quantile(gv, counts[g], 0.5),
               q3 = quantile(gv, counts[g], 0.75), q4 = quantile(gv, counts[g], 1);
#define Y(v) (bot - (bot - top) * (v))
        OUT("<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x, x, Y(q0), Y(q4));
        OUT("<rect x=\"%.0f\" y=\"%.1f\" width=\"50\" height=\"%.1f\" fill=\"%s\" stroke=\"black\"/>\n", x - 25, Y(q3),
            Y(q1) - Y(q3) > 0.5 ? Y(q1) - Y(q3) : 0.5, g < ng / nv ? "#9ecae1" : "#fdae6b");
        OUT("<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"2\"/>\n", x - 25,
            x + 25, Y(q2), Y(q2));
        for (int i = 0; i < counts[g]; i++)
            OUT("<circle cx=\"%.0f\" cy=\"%.1f\" r=\"2\" fill=\"#333\"/>\n", x + 35, Y(gv[i]));
#undef Y
    }
    OUT("</svg>\n");
#undef OUT
    free(vals);
    if (fclose(f)) free(s), s = NULL;
    return s;
}

static ls_status write_report(const char *dir, const exp_opts *o, const ls_train_config *c, const ls_manifest *m,
                              const result *res, int nt, int nv, const char *teacher_id, double seconds, ls_error *err) {
    char *md = NULL, *csv = NULL, path[4200];
    size_t n = 0, k = 0;
    FILE *fm = open_memstream(&md, &n), *fc = open_memstream(&csv, &k);
    if (!fm || !fc) {
        if (fm) fclose(fm), free(md);
        if (fc) fclose(fc), free(csv);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the report", dir);
    }
    struct utsname u;
    uname(&u);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
    char *cfg = ls_train_config_json(c);
#define MD(...) fprintf(fm, __VA_ARGS__)
    MD("# Experiment: train %s -> test %s\n\n", c->datasets, o->test);
    MD("- teacher: `%s`%s\n", teacher_id, strstr(teacher_id, ":random:") ? " (random initialisation: no pretrained "
                                                                           "teacher was used)" : "");
    MD("- training cases: %d held out per dataset for validation (model selection)%s\n", c->val_split,
       c->limit ? ", at most --limit per dataset" : "");
    MD("- test cases: %d (%s)\n", nt, "held-out cases of trained datasets, all cases of the others");
    char threads[32];
    snprintf(threads, sizeof threads, o->threads > 0 ? "%d" : "all", o->threads);
    MD("- run: livseg %s on %s (%s), %s threads, %s, %.0f s in all\n", LIVSEG_VERSION, u.nodename, u.machine,
       threads, date, seconds);
    MD("- training configuration: `%s`\n\n", cfg);
    MD("Masks are the full `livseg segment` pipeline (largest component, holes filled) on each case's own grid;\n"
       "metrics as `livseg eval` (MedPy's definitions, mm).\n\n");
    MD("| variant | cases | Dice | ASSD (mm) | MSSD (mm) |\n| --- | --- | --- | --- | --- |\n");
    double *a = malloc(sizeof(double) * (size_t)(nt + 1)), *b = malloc(sizeof(double) * (size_t)(nt + 1));
    for (int v = 0; v < nv; v++) {
        MD("| %s | %d", variant_name(v), nt);
        for (int w = 0; w < 3; w++) {
            double mean, sd;
            for (int i = 0; i < nt; i++) a[i] = metric_of(&res[v * nt + i].m, w);
            int cnt = ls_mean_sd(a, nt, &mean, &sd);
            if (!cnt) MD(" | undefined");
            else MD(" | %.3f +- %.3f%s", mean, sd, cnt < nt ? " (defined for fewer cases: an empty mask)" : "");
        }
        MD(" |\n");
    }
    if (nv == 2) {
        MD("\nPaired t-test, with vs without the contrastive loss (two-sided):");
        const char *names[3] = {"Dice", "ASSD", "MSSD"};
        for (int w = 0; w < 3; w++) {
            int cnt = 0;
            for (int i = 0; i < nt; i++) {
                double x = metric_of(&res[i].m, w), y = metric_of(&res[nt + i].m, w);
                if (isfinite(x) && isfinite(y)) a[cnt] = x, b[cnt++] = y;
            }
            double t, p = cnt >= 2 ? ls_ttest_paired(a, b, cnt, &t) : NAN;
            MD(" %s p = %.3g%s", names[w], p, w < 2 ? "," : "\n");
        }
    }
    MD("\n![Dice per target](dice.svg)\n\n| case | dataset |");
    for (int v = 0; v < nv; v++) MD(" Dice%s | ASSD%s | MSSD%s |", v ? " (no CD)" : "", v ? " (no CD)" : "", v ? " (no CD)" : "");
    MD("\n| --- | --- |");
    for (int v = 0; v < nv; v++) MD(" --- | --- | --- |");
    MD("\n");
    fprintf(fc, "case,dataset,variant,dice,assd_mm,mssd_mm,pred_ml,ref_ml,review\n");
    for (int i = 0; i < nt; i++) {
        const ls_case *cs = &m->cases[res[i].case_index];
        MD("| %s | %s |", cs->id, cs->dataset);
        for (int v = 0; v < nv; v++) {
            const ls_metrics *q = &res[v * nt + i].m;
            if (isfinite(q->assd_mm)) MD(" %.4f | %.2f | %.1f |", q->dice, q->assd_mm, q->mssd_mm);
            else MD(" %.4f | - | - |", q->dice);
            fprintf(fc, "%s,%s,%s,%.6f,%.4f,%.4f,%.2f,%.2f,", cs->id, cs->dataset, v ? "no_cd" : "cd", q->dice,
                    q->assd_mm, q->mssd_mm, q->pred_ml, q->ref_ml);
            for (int b = 0, first = 1; b < LS_REVIEW_NFLAGS; b++)
                if (res[v * nt + i].review & (1u << b))
                    fprintf(fc, "%s%s", first ? "" : " ", ls_review_name((ls_review_flag)(1u << b))), first = 0;
            fputc('\n', fc);
        }
        MD("\n");
    }
#undef MD
    free(a), free(b), free(cfg);
    int lost = fclose(fm) != 0;
    lost |= fclose(fc) != 0;
    char *svg = box_svg(m, res, nt, nv, o->test);
    ls_status s = lost || !svg ? ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the report", dir) : LS_OK;
    snprintf(path, sizeof path, "%s/report.md", dir);
    if (!s) s = ls_write_file_atomic(path, md, n, NULL, err);
    snprintf(path, sizeof path, "%s/cases.csv", dir);
    if (!s) s = ls_write_file_atomic(path, csv, k, NULL, err);
    snprintf(path, sizeof path, "%s/dice.svg", dir);
    if (!s) s = ls_write_file_atomic(path, svg, strlen(svg), NULL, err);
    free(svg), free(md), free(csv);
    return s;
}

int cmd_experiment(int argc, char **argv) {
    ls_train_config c;
    exp_opts o;
    int done, rc = parse(argc, argv, &c, &o, &done);
    if (rc || done) return rc;
    ls_error err = {0};
    ls_manifest m;
    if (ls_manifest_read(o.manifest, &m, &err)) return cli_report(&err);
    int *tests = calloc((size_t)m.n + 1, sizeof(int)), nt = 0;
    result *res = calloc((size_t)MAX_VARIANTS * (m.n + 1), sizeof(result));
    ls_device dev;
    ls_backend be = {0};
    double t0 = ls_now();
    ls_status s = ls_manifest_test_cases(&m, o.test, c.datasets, c.val_split, tests, &nt, &err);
    if (!s) s = ls_manifest_check_files(&m, tests, nt, 1, &err); /* not after hours of training */
    if (!s) s = check_test_grids(&m, tests, nt, &err);
    if (!s && !(s = ls_device_parse(o.device, &dev, &err))) s = ls_backend_init(&be, dev, o.threads, &err);
    if (!s) s = ls_make_dir(o.out, "output", &err);
    exp_ui ui = {.quiet = o.quiet, .prep.quiet = o.quiet};
    int nv = o.ablation ? 2 : 1;
    for (int v = 0; !s && v < nv; v++) {
        ls_train_config cv = c;
        if (v) cv.w_cd = 0;
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", o.out, v ? "no_cd" : "cd");
        s = run_variant(&cv, &m, dir, tests, nt, &be, &ui, res + v * nt, v, &err);
    }
    if (!s) {
        ls_teacher t; /* only for its id */
        s = ls_teacher_open(&t, &be, c.teacher[0] ? c.teacher : NULL, c.arch, c.teacher_seed, c.input_size, &err);
        if (!s) {
            s = write_report(o.out, &o, &c, &m, res, nt, nv, t.id, ls_now() - t0, &err);
            ls_teacher_close(&t);
        }
    }
    if (!s) printf("%s/report.md\n", o.out);
    if (be.mem) ls_backend_free(&be);
    free(tests), free(res);
    ls_manifest_free(&m);
    return s ? cli_report(&err) : 0;
}
