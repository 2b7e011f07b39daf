/*
 * cmd_eval.c — `livseg eval`: compare predicted liver masks with reference masks (Dice, ASSD, MSSD,
 * volumes), one pair or a CSV of pairs, and compare two result sets with a paired t-test.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "metrics.h"
#include "util.h"

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: livseg eval PRED REF [--json OUT.json]\n"
            "       livseg eval --pairs PAIRS.csv [--csv OUT.csv] [--json OUT.json]\n"
            "       livseg eval --ttest A.csv B.csv [--metric dice|assd_mm|mssd_mm]\n\n"
            "Compares predicted liver masks with reference masks on the same grid (voxels > 0.5 are liver):\n"
            "  dice      2|P and R| / (|P| + |R|)\n"
            "  assd_mm   average symmetric surface distance in mm (mean of the two directed means)\n"
            "  mssd_mm   maximum symmetric surface distance (Hausdorff) in mm\n"
            "  volumes   in mL, and the difference pred - ref in mL and %%\n"
            "Surfaces are mask voxels with a 6-connected background neighbour; distances use the voxel\n"
            "spacing (MedPy's definitions). Both masks empty: Dice 1, distances 0. One empty: Dice 0 and\n"
            "the distances are undefined (null), left out of the mean and std (their count is shown).\n\n"
            "PAIRS.csv has a header line naming the columns case, pred and ref (in any order; paths\n"
            "relative to the CSV's directory or absolute; each case once). --csv writes one line per case;\n"
            "--ttest pairs two such files by case and prints the paired t-test's p-value for a metric.\n"
            "Outputs are written atomically, never over an input.\n"
            "Exit status 2 on bad input (unreadable file, different grids), with one line saying which.\n");
}

typedef struct {
    char id[128], pred[4096], ref[4096];
    ls_metrics m;
} eval_row;

static int eval_pair(const char *pred, const char *ref, ls_metrics *m) {
    ls_volume p, r;
    ls_error err = {0};
    if (ls_volume_read(pred, &p, &err)) return cli_report(&err);
    if (ls_volume_read(ref, &r, &err)) {
        ls_volume_free(&p);
        return cli_report(&err);
    }
    ls_status s = ls_metrics_volumes(&p, &r, pred, ref, m, &err);
    ls_volume_free(&p);
    ls_volume_free(&r);
    return s ? cli_report(&err) : 0;
}

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *metrics_json(const ls_metrics *m) {
    return json_pack("{s:o, s:o, s:o, s:f, s:f, s:f, s:o, s:I, s:I}", "dice", num_or_null(m->dice), "assd_mm",
                     num_or_null(m->assd_mm), "mssd_mm", num_or_null(m->mssd_mm), "pred_ml", m->pred_ml, "ref_ml",
                     m->ref_ml, "diff_ml", m->diff_ml, "diff_pct", num_or_null(m->diff_pct), "pred_voxels",
                     (json_int_t)m->pred_voxels, "ref_voxels", (json_int_t)m->ref_voxels);
}

static int write_json(const char *path, json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    ls_error err = {0};
    ls_status s = text ? ls_write_file_atomic(path, text, strlen(text), NULL, &err)
                       : ls_fail(&err, LS_ERR_NOMEM, "%s: cannot format JSON", path);
    free(text);
    return s ? cli_report(&err) : 0;
}

/* Mean and deviation of one metric (at byte offset `off` in ls_metrics) over the rows' finite values. */
static int summary(const eval_row *r, int n, size_t off, double *mean, double *sd) {
    double *v = malloc(sizeof(double) * (size_t)n);
    if (!v) return *mean = *sd = NAN, 0;
    for (int i = 0; i < n; i++) v[i] = *(const double *)((const char *)&r[i].m + off);
    int k = ls_mean_sd(v, n, mean, sd);
    free(v);
    return k;
}

static void print_row(const char *id, const ls_metrics *m) {
    printf("%-24s %7.4f %9.3f %9.3f %10.1f %10.1f %+9.1f\n", id, m->dice, m->assd_mm, m->mssd_mm, m->pred_ml, m->ref_ml,
           m->diff_ml);
}

/* Splits a simple CSV line (no quoted commas) into at most n fields, in place. */
static int split_csv(char *line, char **f, int n) {
    int k = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; k < n;) {
        f[k++] = p;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return k;
}

/* `p` relative to the directory of `csv` (absolute paths kept); 0 when it does not fit in n bytes. */
static int resolve(const char *csv, const char *p, char *out, size_t n) {
    const char *slash = strrchr(csv, '/');
    int w = p[0] == '/' || !slash ? snprintf(out, n, "%s", p) : snprintf(out, n, "%.*s/%s", (int)(slash - csv), csv, p);
    return w >= 0 && (size_t)w < n;
}

/* A header or field name as written: without a UTF-8 byte order mark, surrounding spaces or quotes. */
static char *bare(char *s) {
    if (!strncmp(s, "\xef\xbb\xbf", 3)) s += 3;
    while (*s == ' ' || *s == '"') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '"')) s[--l] = 0;
    return s;
}

#define MAX_COLS 64

/* The header fields `fld` (nf of them): the index of each of `names` (k of them, case-insensitive) into
 * col[]. One line on stderr and 2 when a name is missing or named twice. */
static int header_columns(const char *path, char **fld, int nf, const char *const *names, int k, int *col) {
    for (int i = 0; i < k; i++) {
        col[i] = -1;
        for (int j = 0; j < nf; j++) {
            if (strcasecmp(fld[j], names[i])) continue;
            if (col[i] >= 0) {
                fprintf(stderr, "livseg: %s: the header names '%s' twice\n", path, names[i]);
                return 2;
            }
            col[i] = j;
        }
        if (col[i] < 0) {
            fprintf(stderr, "livseg: %s: no column '%s' in the header\n", path, names[i]);
            return 2;
        }
    }
    return 0;
}

/* The whole pair list, checked before any pair is evaluated: its header names case, pred and ref once
 * each (any order, any case), every row has them, no case twice, at least one pair, no output among the
 * files. Paths are resolved against the list's directory. */
static int read_pairs(const char *csv, const char *out_csv, const char *out_json, eval_row **rows_out, int *n_out) {
    char *text;
    size_t len;
    ls_error err = {0};
    *rows_out = NULL, *n_out = 0;
    if (ls_read_file(csv, (size_t)64 << 20, &text, &len, &err)) return cli_report(&err);
    eval_row *rows = NULL;
    int n = 0, cap = 0, rc = 0, lineno = 0, col[3], ncol = 0;
    static const char *const want[3] = {"case", "pred", "ref"};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *fld[MAX_COLS];
        int nf = split_csv(line, fld, MAX_COLS);
        if (nf == 1 && !*bare(fld[0])) continue; /* a blank line */
        for (int j = 0; j < nf; j++) fld[j] = bare(fld[j]);
        if (!ncol) {
            ncol = nf;
            rc = header_columns(csv, fld, nf, want, 3, col);
            continue;
        }
        if (nf < ncol) {
            fprintf(stderr, "livseg: %s:%d: expected %d fields as in the header\n", csv, lineno, ncol);
            rc = 2;
            break;
        }
        const char *id = fld[col[0]];
        if (strlen(id) >= sizeof rows->id) {
            fprintf(stderr, "livseg: %s:%d: case name longer than %zu characters\n", csv, lineno, sizeof rows->id - 1);
            rc = 2;
            break;
        }
        for (int k = 0; k < n && !rc; k++)
            if (!strcmp(rows[k].id, id)) rc = 2, fprintf(stderr, "livseg: %s:%d: case %s appears twice\n", csv, lineno, id);
        if (rc) break;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            eval_row *grown = realloc(rows, sizeof *rows * (size_t)cap);
            if (!grown) {
                fprintf(stderr, "livseg: %s: out of memory\n", csv);
                rc = 2;
                break;
            }
            rows = grown;
        }
        eval_row *r = &rows[n++];
        snprintf(r->id, sizeof r->id, "%s", id);
        if (!resolve(csv, fld[col[1]], r->pred, sizeof r->pred) || !resolve(csv, fld[col[2]], r->ref, sizeof r->ref)) {
            fprintf(stderr, "livseg: %s:%d: path longer than %zu characters\n", csv, lineno, sizeof r->pred - 1);
            rc = 2;
            break;
        }
        if (cli_over_input(out_csv, r->pred) || cli_over_input(out_csv, r->ref) || cli_over_input(out_json, r->pred) ||
            cli_over_input(out_json, r->ref))
            rc = 2;
    }
    free(text);
    if (!rc && !ncol) rc = 2, fprintf(stderr, "livseg: %s: empty (expected a header case,pred,ref and pairs)\n", csv);
    else if (!rc && !n) rc = 2, fprintf(stderr, "livseg: %s: no pairs after the header\n", csv);
    if (rc) free(rows), rows = NULL, n = 0;
    *rows_out = rows, *n_out = n;
    return rc;
}

static int eval_pairs(const char *csv, const char *out_csv, const char *out_json) {
    if (cli_over_input(out_csv, csv) || cli_over_input(out_json, csv)) return 2;
    eval_row *rows;
    int n, rc = read_pairs(csv, out_csv, out_json, &rows, &n);
    if (rc) return rc;
    printf("%-24s %7s %9s %9s %10s %10s %9s\n", "case", "dice", "assd_mm", "mssd_mm", "pred_ml", "ref_ml", "diff_ml");
    for (int i = 0; i < n && !rc; i++)
        if (!(rc = eval_pair(rows[i].pred, rows[i].ref, &rows[i].m))) print_row(rows[i].id, &rows[i].m);
    if (!rc && n) {
        static const struct { const char *name; size_t off; } cols[] = {
            {"dice", offsetof(ls_metrics, dice)}, {"assd_mm", offsetof(ls_metrics, assd_mm)}, {"mssd_mm", offsetof(ls_metrics, mssd_mm)}};
        json_t *sum = json_object();
        for (int c = 0; c < 3; c++) {
            double mean, sd;
            int k = summary(rows, n, cols[c].off, &mean, &sd);
            printf("%-8s mean %.4f  std %.4f  (%d of %d cases)\n", cols[c].name, mean, sd, k, n);
            json_object_set_new(sum, cols[c].name, json_pack("{s:o, s:o, s:i}", "mean", num_or_null(mean), "std", num_or_null(sd), "cases", k));
        }
        if (out_csv) {
            char *buf = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&buf, &len);
            int ok = f != NULL;
            if (f) {
                fprintf(f, "case,dice,assd_mm,mssd_mm,pred_ml,ref_ml,diff_ml,diff_pct\n");
                for (int i = 0; i < n; i++)
                    fprintf(f, "%s,%.6f,%.6f,%.6f,%.3f,%.3f,%.3f,%.3f\n", rows[i].id, rows[i].m.dice, rows[i].m.assd_mm,
                            rows[i].m.mssd_mm, rows[i].m.pred_ml, rows[i].m.ref_ml, rows[i].m.diff_ml, rows[i].m.diff_pct);
                ok = fclose(f) == 0;
            }
            ls_error err = {0};
            if (!ok) ls_fail(&err, LS_ERR_NOMEM, "%s: out of memory", out_csv), rc = cli_report(&err);
            else if (ls_write_file_atomic(out_csv, buf, len, NULL, &err)) rc = cli_report(&err);
            free(buf);
        }
        if (out_json && !rc) {
            json_t *cases = json_array();
            for (int i = 0; i < n; i++) {
                json_t *o = metrics_json(&rows[i].m);
                json_object_set_new(o, "case", json_string(rows[i].id));
                json_array_append_new(cases, o);
            }
            rc = write_json(out_json, json_pack("{s:o, s:o}", "cases", cases, "summary", sum));
            sum = NULL;
        }
        json_decref(sum);
    }
    free(rows);
    return rc;
}

/* A --csv file's cases and one metric's values. */
typedef struct {
    char **ids;
    double *v;
    int n, cap;
} result_set;

static void results_free(result_set *r) {
    for (int i = 0; i < r->n; i++) free(r->ids[i]);
    free(r->ids), free(r->v);
    memset(r, 0, sizeof *r);
}

static int results_add(result_set *r, const char *id, double v) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 256;
        char **ids = realloc(r->ids, sizeof *ids * (size_t)cap);
        if (ids) r->ids = ids;
        double *vv = realloc(r->v, sizeof *vv * (size_t)cap);
        if (vv) r->v = vv;
        if (!ids || !vv) return -1;
        r->cap = cap;
    }
    if (!(r->ids[r->n] = strdup(id))) return -1;
    r->v[r->n++] = v;
    return 0;
}

/* Case -> metric from a --csv file (columns found by name; "nan" for an undefined distance is a value).
 * 2 with one line on stderr when the file cannot be read or a row is malformed. */
static int read_results(const char *path, const char *metric, result_set *r) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "livseg: %s: cannot open (%s)\n", path, strerror(errno));
        return 2;
    }
    char *line = NULL, *fld[MAX_COLS];
    size_t cap = 0;
    int lineno = 0, header = 0, cols[2] = {-1, -1}, rc = 0;
    const char *names[2] = {"case", metric};
    while (!rc && getline(&line, &cap, f) >= 0) {
        lineno++;
        int k = split_csv(line, fld, MAX_COLS);
        for (int j = 0; j < k; j++) fld[j] = bare(fld[j]);
        if (k == 1 && !*fld[0]) continue; /* a blank line */
        if (!header) {
            header = 1;
            rc = header_columns(path, fld, k, names, 2, cols);
            continue;
        }
        int id = cols[0], col = cols[1];
        char *end = NULL;
        double x = k > col && k > id ? strtod(fld[col], &end) : 0;
        if (k <= col || k <= id) {
            rc = 2, fprintf(stderr, "livseg: %s:%d: fewer fields than the header names\n", path, lineno);
        } else if (end == fld[col] || *end) {
            rc = 2, fprintf(stderr, "livseg: %s:%d: %s '%s' is not a number\n", path, lineno, metric, fld[col]);
        } else {
            for (int j = 0; j < r->n && !rc; j++)
                if (!strcmp(r->ids[j], fld[id])) rc = 2, fprintf(stderr, "livseg: %s:%d: case %s appears twice\n", path, lineno, fld[id]);
            if (!rc && results_add(r, fld[id], x)) rc = 2, fprintf(stderr, "livseg: %s: out of memory\n", path);
        }
    }
    if (!rc && !header) rc = 2, fprintf(stderr, "livseg: %s: empty (expected a header and cases)\n", path);
    free(line);
    fclose(f);
    return rc;
}

static int eval_ttest(const char *a, const char *b, const char *metric) {
    result_set ra = {0}, rb = {0};
    int rc = read_results(a, metric, &ra);
    if (!rc) rc = read_results(b, metric, &rb);
    double *x = rc ? NULL : malloc(sizeof(double) * (size_t)(ra.n + 1)), *y = rc ? NULL : malloc(sizeof(double) * (size_t)(ra.n + 1));
    if (!rc && (!x || !y)) rc = 2, fprintf(stderr, "livseg: out of memory\n");
    int k = 0;
    for (int i = 0; !rc && i < ra.n; i++)
        for (int j = 0; j < rb.n; j++)
            if (!strcmp(ra.ids[i], rb.ids[j]) && isfinite(ra.v[i]) && isfinite(rb.v[j])) x[k] = ra.v[i], y[k] = rb.v[j], k++;
    if (!rc && k < 2) rc = 2, fprintf(stderr, "livseg: %s and %s share %d cases with a finite %s; need 2 or more\n", a, b, k, metric);
    if (!rc) {
        double t, p = ls_ttest_paired(x, y, k, &t);
        double ma = 0, mb = 0;
        for (int i = 0; i < k; i++) ma += x[i], mb += y[i];
        printf("%s: %d paired cases, mean %.4f (%s) vs %.4f (%s), t = %.4f, p = %.4g\n", metric, k, ma / k, a, mb / k, b,
               t, p);
    }
    free(x), free(y);
    results_free(&ra), results_free(&rb);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    const char *pairs = NULL, *out_csv = NULL, *out_json = NULL, *metric = "dice", *pos[2] = {NULL, NULL};
    const char *ta = NULL, *tb = NULL;
    int npos = 0, metric_given = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            eval_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--pairs") && i + 1 < argc) pairs = argv[++i];
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) out_csv = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) out_json = argv[++i];
        else if (!strcmp(argv[i], "--metric") && i + 1 < argc) metric = argv[++i], metric_given = 1;
        else if (!strcmp(argv[i], "--ttest") && i + 2 < argc) ta = argv[++i], tb = argv[++i];
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "livseg eval: %s '%s' (see livseg eval --help)\n",
                    strcmp(argv[i], "--ttest") ? "unknown option or missing value" : "--ttest needs two files, not one:",
                    argv[i]);
            return 2;
        } else if (npos == 2) {
            fprintf(stderr, "livseg eval: unexpected argument '%s' (see livseg eval --help)\n", argv[i]);
            return 2;
        } else pos[npos++] = argv[i];
    }
    /* The three modes take different options: one that would be ignored is refused instead. */
    const char *mode = ta ? "--ttest" : pairs ? "--pairs" : NULL, *stray = NULL;
    if (npos && mode) stray = pos[0];
    else if (ta && (pairs || out_csv || out_json)) stray = pairs ? "--pairs" : out_csv ? "--csv" : "--json";
    else if (!mode && out_csv) stray = "--csv";
    else if (!ta && metric_given) stray = "--metric";
    if (stray) {
        fprintf(stderr, "livseg eval: '%s' does not go with %s (see livseg eval --help)\n", stray, mode ? mode : "PRED REF");
        return 2;
    }
    if (ls_same_target(out_csv, out_json)) {
        fprintf(stderr, "livseg: %s: given for both --csv and --json\n", out_csv);
        return 2;
    }
    ls_error err = {0};
    const char *outs[2] = {out_csv, out_json};
    for (int k = 0; k < 2; k++)
        if (outs[k] && ls_output_check(outs[k], &err)) return cli_report(&err);
    if (ta) return eval_ttest(ta, tb, metric);
    if (pairs) return eval_pairs(pairs, out_csv, out_json);
    if (npos != 2) {
        eval_usage(stderr);
        return 2;
    }
    if (cli_over_input(out_json, pos[0]) || cli_over_input(out_json, pos[1])) return 2;
    ls_metrics m;
    int rc = eval_pair(pos[0], pos[1], &m);
    if (rc) return rc;
    printf("%-24s %7s %9s %9s %10s %10s %9s\n", "case", "dice", "assd_mm", "mssd_mm", "pred_ml", "ref_ml", "diff_ml");
    print_row("pair", &m);
    return out_json ? write_json(out_json, metrics_json(&m)) : 0;
}
