/*
 * state.c — see state.h.
 */
#include "state.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

ls_status ls_state_write(const ls_backend *be, const char *path, const ls_state_tensor *t, int nt,
                         const char *const *meta, int nmeta, ls_error *err) {
    size_t total = 0, off = 0;
    for (int i = 0; i < nt; i++) total += t[i].n;
    float *h = ls_calloc(total + 1, sizeof(float), err);
    ls_st_entry *e = ls_calloc((size_t)nt, sizeof *e, err);
    ls_status s = h && e ? LS_OK : LS_ERR_NOMEM;
    for (int i = 0; !s && i < nt; i++) {
        be->mem->to_host(be, h + off, t[i].data, t[i].n * sizeof(float));
        e[i] = (ls_st_entry){t[i].name, h + off, 1, {(int64_t)t[i].n}, 0};
        off += t[i].n;
    }
    if (!s) s = ls_st_write(path, e, nt, meta, nmeta, NULL, err);
    free(h), free(e);
    return s;
}

ls_status ls_state_read(const ls_backend *be, ls_st_file *f, const char *path, const ls_state_tensor *t, int nt,
                        ls_error *err) {
    size_t most = 1;
    for (int i = 0; i < nt; i++) most = t[i].n > most ? t[i].n : most;
    float *h = ls_calloc(most, sizeof(float), err);
    ls_status s = h ? LS_OK : LS_ERR_NOMEM;
    for (int i = 0; !s && i < nt; i++) {
        int r = ls_st_source(f, t[i].name, h, t[i].n, err);
        if (r == LS_TENSOR_MISSING) s = ls_fail(err, LS_ERR_INPUT, "%s: tensor '%s' is missing", path, t[i].name);
        else if (r) s = (ls_status)r;
        else be->mem->to_device(be, t[i].data, h, t[i].n * sizeof(float));
    }
    be->mem->sync(be); /* the host buffer goes before the copies may have read it */
    free(h);
    return s;
}

ls_status ls_state_config(const char *path, const char *kind, const char *what, char **json, ls_error *err) {
    *json = NULL;
    ls_st_file f;
    LS_TRY(ls_st_open(path, &f, err));
    const char *k = ls_st_meta(&f, kind), *c = ls_st_meta(&f, "config");
    ls_status s = k && c ? LS_OK : ls_fail(err, LS_ERR_INPUT, "%s: not a %s", path, what);
    if (!s && !(*json = strdup(c))) s = ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", path);
    ls_st_close(&f);
    return s;
}
