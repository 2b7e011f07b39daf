/*
 * manifest.h — the case list that training and experiments read: a CSV file with a header row naming
 * at least the columns case, dataset, modality and image, and label for training and evaluation (the
 * format of the shared data's manifest.csv; other columns are ignored; a UTF-8 byte order mark is
 * skipped). Fields may be double-quoted ("" inside quotes is a quote).
 * A modality is CT or MR, optionally followed by '-' and a sequence name (MR-T2SPIR).
 * Relative image and label paths are relative to the manifest's directory.
 *
 * Selection by dataset name: for each named dataset, in manifest order, the LAST `val` cases are held
 * out (the paper's "training test set": 5 scans of each training dataset) and at most `limit` of the
 * others (the first ones; 0 = all) are for training.
 */
#ifndef LS_MANIFEST_H
#define LS_MANIFEST_H

#include "livseg.h"
#include "preprocess.h"

typedef struct {
    char id[64], dataset[64];
    ls_modality modality;
    char image[4096], label[4096]; /* label "" when the case has none */
} ls_case;

typedef struct {
    ls_case *cases;
    int n;
} ls_manifest;

ls_status ls_manifest_read(const char *path, ls_manifest *m, ls_error *err);
void ls_manifest_free(ls_manifest *m);

/* That the image (and with `labels`, the label) of each case idx[0..n) exists: checked before long work,
 * so a missing test scan is not found after hours of training. LS_ERR_INPUT naming the file and case. */
ls_status ls_manifest_check_files(const ls_manifest *m, const int *idx, int n, int labels, ls_error *err);

/* Indices of the cases of a comma-separated list of datasets: training ones into train[] and held-out
 * ones into val[] (arrays of m->n entries). An unknown dataset name, or one without enough cases, is
 * LS_ERR_INPUT naming it. */
ls_status ls_manifest_select(const ls_manifest *m, const char *datasets, int val, int limit, int *train, int *ntrain,
                             int *valid, int *nval, ls_error *err);

/* 1 when `name` is one of the comma-separated names of `list`. */
int ls_dataset_listed(const char *list, const char *name);
/* The test cases of a cross-domain protocol, in the order of `test`'s datasets: every case of a dataset
 * that is not in `trained`, and the held-out cases (the last `val`) of one that is. A test dataset with
 * no case, a test case without a label, or no test case at all (val 0) is LS_ERR_INPUT. */
ls_status ls_manifest_test_cases(const ls_manifest *m, const char *test, const char *trained, int val, int *idx, int *n,
                                 ls_error *err);
#endif
