/*
 * manifest.c — see manifest.h. A small CSV reader: quoted fields, CRLF or LF line ends, no embedded
 * newlines (none of our manifests have them, and refusing them keeps errors line-numbered).
 */
#include "manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define MAX_FIELDS 32

/* Splits one line in place into fields; returns the count, or -1 on an unterminated quote. */
static int split_csv(char *line, char **field, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == max) return n;
        char *out = p;
        field[n++] = out;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"' && p[1] == '"') *out++ = '"', p += 2;
                else if (*p == '"') { p++; break; }
                else *out++ = *p++;
            }
            while (*p && *p != ',') p++; /* anything between the closing quote and the comma is dropped */
        } else {
            while (*p && *p != ',') *out++ = *p++;
        }
        int more = *p == ',';
        *out = 0;
        if (!more) return n;
        p++;
    }
}

static int column(char **names, int n, const char *want) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], want)) return i;
    return -1;
}

/* dir of `path` joined with a relative `rel` (absolute paths are kept). */
static void resolve(const char *path, const char *rel, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (rel[0] == '/' || !slash || !rel[0]) snprintf(out, n, "%s", rel);
    else snprintf(out, n, "%.*s/%s", (int)(slash - path), path, rel);
}

static ls_status parse_row(const char *path, int lineno, char **f, int nf, const int *col, ls_case *c, ls_error *err) {
    for (int k = 0; k < 5; k++)
        if (col[k] >= nf) return ls_fail(err, LS_ERR_INPUT, "%s:%d: too few fields", path, lineno);
    const char *id = f[col[0]], *ds = f[col[1]], *mod = f[col[2]], *img = f[col[3]], *lab = col[4] < 0 ? "" : f[col[4]];
    if (!id[0] || strlen(id) >= sizeof c->id || !ds[0] || strlen(ds) >= sizeof c->dataset)
        return ls_fail(err, LS_ERR_INPUT, "%s:%d: case or dataset name empty or too long", path, lineno);
    if (!img[0]) return ls_fail(err, LS_ERR_INPUT, "%s:%d: case %s has no image", path, lineno, id);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->dataset, sizeof c->dataset, "%s", ds);
    /* "MR-T2SPIR": the modality, then the sequence */
    char base[16];
    snprintf(base, sizeof base, "%.*s", (int)strcspn(mod, "-"), mod);
    ls_error e2 = {0};
    if (ls_modality_parse(base, &c->modality, &e2))
        return ls_fail(err, LS_ERR_INPUT, "%s:%d: modality '%s' is neither CT nor MR", path, lineno, mod);
    resolve(path, img, c->image, sizeof c->image);
    resolve(path, lab, c->label, sizeof c->label);
    return LS_OK;
}

ls_status ls_manifest_read(const char *path, ls_manifest *m, ls_error *err) {
    memset(m, 0, sizeof *m);
    char *buf;
    size_t len;
    LS_TRY(ls_read_file(path, (size_t)64 << 20, &buf, &len, err));
    if (memchr(buf, 0, len)) {
        free(buf);
        return ls_fail(err, LS_ERR_INPUT, "%s: not a text file", path);
    }
    int lines = 1;
    for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
    m->cases = ls_calloc((size_t)lines, sizeof *m->cases, err);
    ls_status s = m->cases ? LS_OK : LS_ERR_NOMEM;
    int col[5] = {-1, -1, -1, -1, -1}, lineno = 0;
    char *save = NULL, *text = len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3) ? buf + 3 : buf; /* a UTF-8 BOM */
    for (char *line = strtok_r(text, "\n", &save); !s && line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[l - 1] = 0;
        if (!line[0]) continue;
        char *f[MAX_FIELDS];
        int nf = split_csv(line, f, MAX_FIELDS);
        if (nf < 0) s = ls_fail(err, LS_ERR_INPUT, "%s:%d: unterminated quote", path, lineno);
        else if (col[0] < 0) {
            static const char *want[4] = {"case", "dataset", "modality", "image"};
            for (int k = 0; !s && k < 4; k++)
                if ((col[k] = column(f, nf, want[k])) < 0)
                    s = ls_fail(err, LS_ERR_INPUT, "%s: header has no '%s' column (need case,dataset,modality,image "
                                "and, to train or evaluate, label)", path, want[k]);
            col[4] = column(f, nf, "label"); /* pretraining needs none */
        } else {
            s = parse_row(path, lineno, f, nf, col, &m->cases[m->n], err);
            for (int k = 0; !s && k < m->n; k++)
                if (!strcmp(m->cases[k].id, m->cases[m->n].id))
                    s = ls_fail(err, LS_ERR_INPUT, "%s:%d: case %s appears twice", path, lineno, m->cases[k].id);
            if (!s) m->n++;
        }
    }
    if (!s && col[0] < 0) s = ls_fail(err, LS_ERR_INPUT, "%s: empty manifest", path);
    free(buf);
    if (s) ls_manifest_free(m);
    return s;
}

ls_status ls_manifest_check_files(const ls_manifest *m, const int *idx, int n, int labels, ls_error *err) {
    struct stat st;
    for (int i = 0; i < n; i++) {
        const ls_case *c = &m->cases[idx[i]];
        if (stat(c->image, &st) != 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: image of case %s: %s", c->image, c->id, strerror(errno));
        if (labels && c->label[0] && stat(c->label, &st) != 0)
            return ls_fail(err, LS_ERR_INPUT, "%s: label of case %s: %s", c->label, c->id, strerror(errno));
    }
    return LS_OK;
}

void ls_manifest_free(ls_manifest *m) {
    free(m->cases);
    memset(m, 0, sizeof *m);
}

ls_status ls_manifest_select(const ls_manifest *m, const char *datasets, int val, int limit, int *train, int *ntrain,
                             int *valid, int *nval, ls_error *err) {
    *ntrain = *nval = 0;
    char list[1024];
    snprintf(list, sizeof list, "%s", datasets);
    char *save = NULL;
    for (char *ds = strtok_r(list, ",", &save); ds; ds = strtok_r(NULL, ",", &save)) {
        int count = 0;
        for (int i = 0; i < m->n; i++) count += !strcmp(m->cases[i].dataset, ds);
        if (count == 0) return ls_fail(err, LS_ERR_INPUT, "dataset '%s' has no case in the manifest", ds);
        if (count <= val)
            return ls_fail(err, LS_ERR_INPUT, "dataset '%s' has %d cases: too few to hold out %d", ds, count, val);
        int seen = 0, used = 0;
        for (int i = 0; i < m->n; i++) {
            if (strcmp(m->cases[i].dataset, ds)) continue;
            if (!m->cases[i].label[0])
                return ls_fail(err, LS_ERR_INPUT, "case %s has no label: training needs one", m->cases[i].id);
            if (seen++ >= count - val) valid[(*nval)++] = i;
            else if (!limit || used < limit) train[(*ntrain)++] = i, used++;
        }
    }
    if (*ntrain == 0) return ls_fail(err, LS_ERR_INPUT, "no training case selected from '%s'", datasets);
    return LS_OK;
}

int ls_dataset_listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ",");
        if (l == n && !strncmp(p, name, n)) return 1;
        p += l + (p[l] == ',');
    }
    return 0;
}

ls_status ls_manifest_test_cases(const ls_manifest *m, const char *test, const char *trained, int val, int *idx, int *n,
                                 ls_error *err) {
    *n = 0;
    if (!test[0] || strspn(test, ",") == strlen(test)) return ls_fail(err, LS_ERR_INPUT, "no test dataset named");
    char list[1024];
    snprintf(list, sizeof list, "%s", test);
    for (char *save = NULL, *ds = strtok_r(list, ",", &save); ds; ds = strtok_r(NULL, ",", &save)) {
        int count = 0, seen = 0;
        for (int i = 0; i < m->n; i++) count += !strcmp(m->cases[i].dataset, ds);
        if (!count) return ls_fail(err, LS_ERR_INPUT, "test dataset '%s' has no case in the manifest", ds);
        int held_out = ls_dataset_listed(trained, ds);
        for (int i = 0; i < m->n; i++) {
            if (strcmp(m->cases[i].dataset, ds)) continue;
            if (!held_out || seen >= count - val) {
                if (!m->cases[i].label[0]) return ls_fail(err, LS_ERR_INPUT, "test case %s has no label", m->cases[i].id);
                idx[(*n)++] = i;
            }
            seen++;
        }
    }
    if (!*n) return ls_fail(err, LS_ERR_INPUT, "no test case: '%s' is trained on and --val-split is 0", test);
    return LS_OK;
}
