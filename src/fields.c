/*
 * fields.c — see fields.h.
 */
#include "fields.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

char *ls_fields_json(const ls_field *f, int n, const void *obj) {
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        const char *p = (const char *)obj + f[i].off;
        json_t *v = NULL;
        switch (f[i].kind) {
        case 'i': v = json_integer(*(const int *)p); break;
        case 'u': v = json_integer((json_int_t) * (const uint64_t *)p); break;
        case 'f': v = json_real(*(const float *)p); break;
        case 's': v = json_string(p); break;
        default:
            v = json_array();
            for (size_t k = 0; k < f[i].size / sizeof(int); k++) json_array_append_new(v, json_integer(((const int *)p)[k]));
        }
        json_object_set_new(o, f[i].name, v);
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    return s;
}

/* Stores v into the field at p; 0 when v has the wrong type or length. */
static int set_field(const ls_field *f, char *p, json_t *v) {
    switch (f->kind) {
    case 'i': return json_is_integer(v) ? (*(int *)p = (int)json_integer_value(v), 1) : 0;
    case 'u': return json_is_integer(v) ? (*(uint64_t *)p = (uint64_t)json_integer_value(v), 1) : 0;
    case 'f': return json_is_number(v) ? (*(float *)p = (float)json_number_value(v), 1) : 0;
    case 's':
        if (!json_is_string(v) || strlen(json_string_value(v)) >= f->size) return 0;
        snprintf(p, f->size, "%s", json_string_value(v));
        return 1;
    default: {
        size_t len = f->size / sizeof(int);
        if (!json_is_array(v) || json_array_size(v) != len) return 0;
        for (size_t k = 0; k < len; k++)
            if (!json_is_integer(json_array_get(v, k))) return 0;
        for (size_t k = 0; k < len; k++) ((int *)p)[k] = (int)json_integer_value(json_array_get(v, k));
        return 1;
    }
    }
}

ls_status ls_fields_from_json(const ls_field *f, int n, void *obj, const char *text, const char *what, ls_error *err) {
    json_error_t je;
    json_t *o = json_loads(text, 0, &je);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return ls_fail(err, LS_ERR_INPUT, "%s is not a JSON object: %s", what, je.text);
    }
    ls_status s = LS_OK;
    for (int i = 0; !s && i < n; i++) {
        json_t *v = json_object_get(o, f[i].name);
        if (v && !set_field(&f[i], (char *)obj + f[i].off, v))
            s = ls_fail(err, LS_ERR_INPUT, "%s: '%s' has the wrong type", what, f[i].name);
    }
    json_decref(o);
    return s;
}
