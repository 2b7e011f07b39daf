/*
 * fields.h — a configuration struct described as a table of its fields (name, kind, offset, size), written
 * to and read from one flat JSON object. The training and pretraining configurations use it for their
 * logs and state files, so a setting is named once, in its table.
 */
#ifndef LS_FIELDS_H
#define LS_FIELDS_H

#include <stddef.h>

#include "util.h"

typedef struct {
    const char *name;
    char kind; /* 'i' int, 'u' uint64_t, 'f' float, 's' char array, 'w' int array (a JSON array of size/sizeof(int)) */
    size_t off, size;
} ls_field;

#define LS_FIELD(type, member, kind) {#member, kind, offsetof(type, member), sizeof(((type *)0)->member)}

/* The fields of obj as compact JSON in table order (malloc'd; NULL when out of memory). */
char *ls_fields_json(const ls_field *f, int n, const void *obj);

/* Sets every field present in the JSON object `text` (absent ones keep their values: a setting added
 * later keeps its default). LS_ERR_INPUT, with `what` naming the object, for text that is not a JSON
 * object or a field of the wrong type or length. */
ls_status ls_fields_from_json(const ls_field *f, int n, void *obj, const char *text, const char *what, ls_error *err);

#endif
