/*
 * test_manifest.c — the manifest reader (src/manifest.c): quoting, paths relative to the manifest,
 * modality with a sequence suffix, selection of training and held-out cases, and one-line errors for
 * broken files; plus the shared data's own manifest when it is present.
 */
#include <string.h>

#include "manifest.h"
#include "test.h"

static const char *write_text(const char *name, const char *text) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

TEST(reads_quotes_paths_and_modalities) {
    const char *p = write_text("m.csv",
                               "case,dataset,modality,image,label,note\r\n"
                               "a1,ds_a,CT,a/a1.nii.gz,a/a1_liver.nii.gz,\"8-bit, window \"\"[-125,275]\"\"\"\r\n"
                               "\n"
                               "b1,ds_b,MR-T2SPIR,/abs/b1.nii,,plain\n");
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(p, &m, &err) == LS_OK, "%s", err.msg);
    REQUIRE(m.n == 2, "%d cases", m.n);
    CHECK(!strcmp(m.cases[0].id, "a1") && !strcmp(m.cases[0].dataset, "ds_a"), "first case %s %s", m.cases[0].id,
          m.cases[0].dataset);
    CHECK(m.cases[0].modality == LS_MOD_CT && m.cases[1].modality == LS_MOD_MR, "modalities");
    char want[700];
    snprintf(want, sizeof want, "%s/a/a1.nii.gz", test_tmpdir());
    CHECK(!strcmp(m.cases[0].image, want), "relative path resolved to %s", m.cases[0].image);
    CHECK(!strcmp(m.cases[1].image, "/abs/b1.nii") && m.cases[1].label[0] == 0, "absolute path %s, empty label '%s'",
          m.cases[1].image, m.cases[1].label);
    ls_manifest_free(&m);
}

TEST(selects_training_and_held_out_cases) {
    char text[2048] = "case,dataset,modality,image,label\n";
    for (int i = 0; i < 7; i++) {
        char row[128];
        snprintf(row, sizeof row, "a%d,A,CT,a%d.nii,a%d_l.nii\nb%d,B,MR,b%d.nii,b%d_l.nii\n", i, i, i, i, i, i);
        strcat(text, row);
    }
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(write_text("sel.csv", text), &m, &err) == LS_OK, "%s", err.msg);
    int tr[32], va[32], nt, nv;
    REQUIRE(ls_manifest_select(&m, "A,B", 2, 3, tr, &nt, va, &nv, &err) == LS_OK, "%s", err.msg);
    CHECK(nt == 6 && nv == 4, "%d training, %d held out", nt, nv);
    /* A: first three for training, last two (a5, a6) held out; then B likewise. */
    CHECK(!strcmp(m.cases[tr[0]].id, "a0") && !strcmp(m.cases[tr[2]].id, "a2") && !strcmp(m.cases[tr[3]].id, "b0"),
          "training order %s %s %s", m.cases[tr[0]].id, m.cases[tr[2]].id, m.cases[tr[3]].id);
    CHECK(!strcmp(m.cases[va[0]].id, "a5") && !strcmp(m.cases[va[1]].id, "a6") && !strcmp(m.cases[va[3]].id, "b6"),
          "held out %s %s %s", m.cases[va[0]].id, m.cases[va[1]].id, m.cases[va[3]].id);
    CHECK(ls_manifest_select(&m, "A,C", 2, 0, tr, &nt, va, &nv, &err) == LS_ERR_INPUT && strstr(err.msg, "'C'"),
          "unknown dataset: %s", err.msg);
    CHECK(ls_manifest_select(&m, "A", 7, 0, tr, &nt, va, &nv, &err) == LS_ERR_INPUT && strstr(err.msg, "too few"),
          "everything held out: %s", err.msg);
    ls_manifest_free(&m);
}

TEST(broken_manifests_are_one_line_errors) {
    struct {
        const char *text, *expect;
    } cases[] = {
        {"", "empty manifest"},
        {"case,dataset,image,label\nx,y,z,w\n", "no 'modality' column"},
        {"case,dataset,modality,image,label\nx,d,PET,i.nii,l.nii\n", "modality 'PET'"},
        {"case,dataset,modality,image,label\nx,d,CT,\"i.nii,l.nii\n", "unterminated quote"},
        {"case,dataset,modality,image,label\nx,d,CT\n", "too few fields"},
        {"case,dataset,modality,image,label\nx,d,CT,,l.nii\n", "has no image"},
        {"case,dataset,modality,image,label\nx,d,CT,i.nii,l.nii\nx,d,CT,j.nii,l.nii\n", "appears twice"},
        {"case,dataset,modality,image,label\n\0x", "not a text file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu.csv", i);
        const char *p = write_text(name, cases[i].text);
        if (i == 7) { /* a NUL byte: fputs stops at it, so write the bytes */
            FILE *f = fopen(p, "wb");
            fwrite("case,dataset,modality,image,label\n\0x", 1, 36, f);
            fclose(f);
        }
        ls_manifest m;
        ls_error err = {0};
        ls_status s = ls_manifest_read(p, &m, &err);
        CHECK(s == LS_ERR_INPUT && strstr(err.msg, cases[i].expect) && strstr(err.msg, p) && !strchr(err.msg, '\n'),
              "case %zu: status %d, message '%s'", i, s, err.msg);
    }
    ls_manifest m;
    ls_error err = {0};
    CHECK(ls_manifest_read("/nonexistent/m.csv", &m, &err) != LS_OK && strstr(err.msg, "/nonexistent/m.csv"),
          "missing file: %s", err.msg);
    CHECK(ls_manifest_read(test_tmpdir(), &m, &err) == LS_ERR_INPUT && strstr(err.msg, "directory"), "a directory: %s",
          err.msg);
}

/* A byte order mark before the header and a manifest without labels (enough to pretrain) read; the files of
 * selected cases are checked to exist, naming the missing one. */
TEST(bom_no_labels_and_missing_files) {
    const char *p = write_text("bom.csv", "\xef\xbb\xbf" "case,dataset,modality,image\na,A,CT,a.nii\nb,A,MR,/abs/b.nii\n");
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(p, &m, &err) == LS_OK, "%s", err.msg);
    CHECK(m.n == 2 && !strcmp(m.cases[0].id, "a") && !m.cases[0].label[0] && !m.cases[1].label[0], "%d cases", m.n);
    int idx[2] = {0, 1};
    write_text("a.nii", "x");
    CHECK(ls_manifest_check_files(&m, idx, 1, 1, &err) == LS_OK, "a.nii is there: %s", err.msg);
    CHECK(ls_manifest_check_files(&m, idx, 2, 0, &err) == LS_ERR_INPUT && strstr(err.msg, "/abs/b.nii") &&
              strstr(err.msg, "case b"), "missing image: %s", err.msg);
    ls_manifest_free(&m);
}

TEST(shared_manifest) {
    const char *d = test_data_dir();
    if (!d) SKIP("../shared/data is absent (set LIVSEG_DATA)");
    char path[600];
    snprintf(path, sizeof path, "%s/manifest.csv", d);
    ls_manifest m;
    ls_error err = {0};
    REQUIRE(ls_manifest_read(path, &m, &err) == LS_OK, "%s", err.msg);
    int tr[128], va[128], nt, nv;
    REQUIRE(ls_manifest_select(&m, "btcv,chaos_t2", 5, 0, tr, &nt, va, &nv, &err) == LS_OK, "%s", err.msg);
    CHECK(nt == 40 && nv == 10, "btcv + chaos_t2: %d training, %d held out (expected 25 + 15 and 5 + 5)", nt, nv);
    for (int i = 0; i < nt; i++) {
        FILE *f = fopen(m.cases[tr[i]].image, "rb");
        CHECK(f != NULL, "%s does not open", m.cases[tr[i]].image);
        if (f) fclose(f);
    }
    ls_manifest_free(&m);
}

int main(void) {
    RUN(reads_quotes_paths_and_modalities);
    RUN(selects_training_and_held_out_cases);
    RUN(broken_manifests_are_one_line_errors);
    RUN(bom_no_labels_and_missing_files);
    RUN(shared_manifest);
    return test_summary();
}
