/*
 * test_cli.c — the `livseg` command as a user meets it: help, exit codes, one-line errors, and
 * `livseg info` on every file and directory of ../shared/data. Runs the binary next to this test's
 * build directory (BUILD/livseg).
 */
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "dicom_synth.h"
#include "ops.h"
#include "test.h"

static char livseg[1024];

/* Runs `livseg ARGS`, returns the exit status; stderr and stdout land in files for inspection. */
static int run(const char *args, char *err_out, size_t n) { return test_run_livseg(livseg, args, err_out, n); }

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

TEST(help_and_usage) {
    char e[4096];
    CHECK(run("--help", e, sizeof e) == 0, "livseg --help failed");
    CHECK(run("info --help", e, sizeof e) == 0, "livseg info --help failed");
    CHECK(run("", e, sizeof e) == 2, "no command must exit 2");
    CHECK(run("frobnicate", e, sizeof e) == 2 && strstr(e, "frobnicate"), "unknown command: %s", e);
}

/* stdout of the last run() */
static void last_stdout(char *text, size_t n) {
    char path[800];
    snprintf(path, sizeof path, "%s/stdout.txt", test_tmpdir());
    text[0] = 0;
    FILE *f = fopen(path, "r");
    if (f) text[fread(text, 1, n - 1, f)] = 0, fclose(f);
}

/* The OpenBLAS kernel choice (ops.h): the table, then the command itself, which must run kernels as good
 * as this CPU allows unless the user named others. */
static int version_core(const char *env, char core[32]) {
    char cmd[1400], text[512];
    snprintf(cmd, sizeof cmd, "%s %s", env, livseg);
    if (test_run_livseg(cmd, "--version", NULL, 0) != 0) return 0;
    last_stdout(text, sizeof text);
    const char *k = strstr(text, "OpenBLAS kernels: ");
    return k && sscanf(k + strlen("OpenBLAS kernels: "), "%31s", core) == 1;
}

TEST(blas_kernels) {
    CHECK(ls_blas_core_for("Prescott", 3) && !strcmp(ls_blas_core_for("Prescott", 3), "SkylakeX"), "Prescott on AVX-512");
    CHECK(ls_blas_core_for("Nehalem", 2) && !strcmp(ls_blas_core_for("Nehalem", 2), "Haswell"), "Nehalem on AVX2");
    CHECK(ls_blas_core_for("sandybridge", 2) && !strcmp(ls_blas_core_for("sandybridge", 2), "Haswell"), "any case");
    CHECK(!ls_blas_core_for("Haswell", 2) && !ls_blas_core_for("Cooperlake", 3) && !ls_blas_core_for("Zen", 2),
          "a choice as good as the CPU stands");
    CHECK(!ls_blas_core_for("Prescott", 0) && !ls_blas_core_for("NewCore9000", 3) && !ls_blas_core_for(NULL, 3),
          "no better kernels, or a name not known here: OpenBLAS's choice stands");
    char core[32] = "";
    CHECK(version_core("env -u OPENBLAS_CORETYPE", core), "livseg --version names no OpenBLAS kernels");
    int level = ls_cpu_vector_level();
    CHECK(!ls_blas_core_for(core, level), "livseg runs OpenBLAS's %s kernels on a CPU of vector level %d", core, level);
    printf("  this CPU: vector level %d; livseg runs OpenBLAS's %s kernels (this test: %s)\n", level, core, ls_blas_core());
    CHECK(version_core("env OPENBLAS_CORETYPE=Prescott", core) && !strcmp(core, "Prescott"),
          "the user's OPENBLAS_CORETYPE=Prescott was not kept: %s", core);
}

/* Each bad input: exit 2, exactly one line on stderr, naming the file. */
TEST(bad_input_one_line) {
    const char *dir = test_tmpdir();
    char p[600], args[1300], e[4096];
    struct { const char *name, *content; } cases[] = {
        {"missing.nii.gz", NULL},
        {"text.nii", "hello, this is not an image\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, cases[i].name);
        if (cases[i].content) {
            FILE *f = fopen(p, "w");
            fputs(cases[i].content, f);
            fclose(f);
        }
        snprintf(args, sizeof args, "info %s", p);
        int rc = run(args, e, sizeof e);
        CHECK(rc == 2, "%s: exit %d", cases[i].name, rc);
        CHECK(count_lines(e) == 1 && strstr(e, p), "%s: stderr was: %s", cases[i].name, e);
    }
    snprintf(p, sizeof p, "%s/emptydir", dir);
    mkdir(p, 0755);
    snprintf(args, sizeof args, "info %s", p);
    int rc = run(args, e, sizeof e);
    CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, p), "empty directory: exit %d, stderr: %s", rc, e);
}

/* train and experiment: usage mistakes and broken manifests are one line and exit 2, before any work. */
TEST(train_and_experiment_usage) {
    char e[4096], args[1600], m[600];
    CHECK(run("train --help", e, sizeof e) == 0, "train --help failed");
    CHECK(run("experiment --help", e, sizeof e) == 0, "experiment --help failed");
    snprintf(m, sizeof m, "%s/m.csv", test_tmpdir());
    FILE *f = fopen(m, "w");
    fputs("case,dataset,modality,image,label\nx,ds,CT,missing.nii.gz,missing_l.nii.gz\n", f);
    fclose(f);
    const char *bad[][2] = {
        {"train", "no manifest"},
        {"train M", "no output directory"},
        {"train M -o OUT --widths 1,2,3", "--widths"},
        {"train M -o OUT --epochs many", "--epochs"},
        {"train M -o OUT --preset huge", "preset"},
        {"train M -o OUT --frobnicate 3", "--frobnicate"},
        {"train M -o OUT --train nosuch", "nosuch"},
        {"train M -o OUT --train ds --val-split 0", "missing.nii.gz"},
        {"train /nonexistent.csv -o OUT", "/nonexistent.csv"},
        {"experiment M -o OUT", "--test"},
        {"experiment M -o OUT --train ds --test other", "other"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "%s", bad[i][0]);
        /* M and OUT stand for the manifest and an output directory in the scratch space */
        char *p;
        args[0] = 0;
        for (char *tok = strtok_r(cmd, " ", &p); tok; tok = strtok_r(NULL, " ", &p)) {
            char piece[700];
            if (!strcmp(tok, "M")) snprintf(piece, sizeof piece, "%s ", m);
            else if (!strcmp(tok, "OUT")) snprintf(piece, sizeof piece, "%s/out ", test_tmpdir());
            else snprintf(piece, sizeof piece, "%s ", tok);
            strcat(args, piece);
        }
        int rc = run(args, e, sizeof e);
        CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, bad[i][1]), "livseg %s: exit %d, stderr: %s", bad[i][0], rc, e);
    }
    /* Test cases are checked before training: a missing image, a label on another grid (from the headers). */
    char data[1024];
    if (!test_data_dir() || !realpath(test_data_dir(), data)) return; /* the manifest's paths must be absolute */
    f = fopen(m, "w");
    fprintf(f, "case,dataset,modality,image,label\nt,ts,CT,%s/totalseg/totalseg_ct_sm_ct.nii.gz,%s/totalseg/totalseg_ct_sm_liver.nii.gz\n"
               "u,ts,MR,%s/totalseg/totalseg_mr_sm_mr.nii.gz,%s/totalseg/totalseg_mr_sm_liver.nii.gz\n"
               "x,other,CT,%s/btcv/btcv_03_ct.nii.gz,%s/btcv/btcv_04_liver.nii.gz\n"
               "y,gone,CT,%s/btcv/no_such_ct.nii.gz,%s/btcv/btcv_04_liver.nii.gz\n", data, data, data, data, data, data, data, data);
    fclose(f);
    struct stat st;
    snprintf(args, sizeof args, "experiment %s --train ts --val-split 1 --test other -o %s/exp", m, test_tmpdir());
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, "btcv_04_liver.nii.gz: grid"), "label grid: %s", e);
    snprintf(args, sizeof args, "experiment %s --train ts --val-split 1 --test gone -o %s/exp", m, test_tmpdir());
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, "no_such_ct.nii.gz"), "missing image: %s", e);
    snprintf(args, sizeof args, "%s/exp", test_tmpdir());
    CHECK(stat(args, &st) != 0, "%s made although nothing ran", args);
}

/* A numeric option that does not parse, or is out of range, is one line naming the option and exit 2 before
 * anything is read or written (atoi had turned "abc" into 0: --threshold abc thresholded at 0). */
TEST(numeric_options) {
    char e[4096], args[1600];
    const char *dir = test_tmpdir();
    const char *bad[][2] = {
        {"segment IN -o OUT --batch 0", "--batch"},
        {"segment IN -o OUT --batch 8x", "--batch"},
        {"segment IN -o OUT --threshold abc", "--threshold"},
        {"segment IN -o OUT --threshold 1.5", "--threshold"},
        {"segment IN -o OUT --threads -1", "--threads"},
        {"features --batch 0 IN", "--batch"},
        {"features --size 2x IN", "--size"},
        {"features --seed -3 IN", "--seed"},
        {"train IN -o OUT --threads many", "--threads"},
        {"experiment IN -o OUT --test x --threads 1.5", "--threads"},
        {"pretrain IN -o OUT --until soon", "--until"},
        {"train IN -o OUT --lr nan", "finite"},
        {"train IN -o OUT --aug-rotate inf", "finite"},
        {"experiment IN -o OUT --test x --b-self nan", "finite"},
        {"pretrain IN -o OUT --lr inf", "finite"},
        {"probe IN --fit a --test b --l2 inf", "finite"},
        {"probe IN --fit a --test b --l2 0", "--l2"},
        {"train IN -o OUT --bogus", "unknown option"},
        {"pretrain IN -o OUT --bogus", "unknown option"},
        {"probe IN --bogus", "unknown option"},
        {"info --bogus", "unknown option"},
        {"info IN --series", "needs a value"},
        {"info --series 2 IN", "not a directory"},
        {"segment IN -o OUT.nii.gz --series 2", "not a directory"},
        {"segment IN -o OUT.nii.gz --echo 2", "not a directory"},
        {"segment IN -o OUT.nii.gz --echo 0", "--echo"},
        {"info --echo x IN", "--echo"},
        {"info --echo 2 IN", "not a directory"},
        {"segment IN", "no output"},
        {"features --cache OUT IN -q", "before the inputs"},
        {"segment IN -o OUT.nii.gz --bogus", "unknown option"},
        {"experiment IN -o OUT --test x --bogus", "unknown option"},
        {"experiment IN -o OUT --test x --resume", "--resume"},
        {"probe IN --fit a --test b --l2 -1", "not '-1'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char cmd[400], *p;
        snprintf(cmd, sizeof cmd, "%s", bad[i][0]);
        args[0] = 0;
        for (char *tok = strtok_r(cmd, " ", &p); tok; tok = strtok_r(NULL, " ", &p)) {
            char piece[700];
            if (!strcmp(tok, "IN")) snprintf(piece, sizeof piece, "%s/in.nii.gz ", dir);
            else if (!strcmp(tok, "OUT")) snprintf(piece, sizeof piece, "%s/numeric-out ", dir);
            else snprintf(piece, sizeof piece, "%s ", tok);
            strcat(args, piece);
        }
        int rc = run(args, e, sizeof e);
        CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, bad[i][1]), "livseg %s: exit %d, stderr: %s", bad[i][0], rc, e);
    }
    char out[700];
    snprintf(out, sizeof out, "%s/numeric-out", dir);
    CHECK(access(out, F_OK) != 0, "%s was created", out);
}

TEST(info_on_all_shared_data) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    const char *sub[] = {"btcv", "chaos_t2", "totalseg", "dicom"};
    int n = 0;
    for (size_t s = 0; s < sizeof sub / sizeof *sub; s++) {
        char d[1024];
        snprintf(d, sizeof d, "%s/%s", data, sub[s]);
        DIR *dp = opendir(d);
        if (!dp) {
            CHECK(0, "cannot list %s", d);
            continue;
        }
        struct dirent *de;
        char args[8192] = "info";
        while ((de = readdir(dp))) {
            if (de->d_name[0] == '.') continue;
            size_t len = strlen(args);
            snprintf(args + len, sizeof args - len, " %s/%s", d, de->d_name);
            n++;
        }
        closedir(dp);
        char e[4096];
        int rc = run(args, e, sizeof e);
        CHECK(rc == 0, "livseg info on %s/* exited %d: %s", d, rc, e);
    }
    CHECK(n >= 100, "only %d inputs found", n);
}

/* A synthetic scan of nz slices of side x side, a bright disc its "liver", and its mask. */
static int write_disc_scan(const char *img, const char *lab, int side, int nz, float shift) {
    int64_t dim[3] = {side, side, nz};
    double aff[4][4] = {{2, 0, 0, 0}, {0, 2, 0, 0}, {0, 0, 5, 0}, {0, 0, 0, 1}};
    ls_volume v = {0}, m = {0};
    ls_geom_from_affine(&v.geom, dim, aff);
    m.geom = v.geom;
    size_t n = (size_t)side * side * nz;
    v.data = calloc(n, sizeof(float)), m.data = calloc(n, sizeof(float));
    for (size_t at = 0; at < n; at++) {
        int i = (int)(at % (size_t)side), j = (int)(at / (size_t)side % (size_t)side);
        float di = (float)i - side / 3.0f - shift, dj = (float)j - side / 2.0f;
        int in = di * di + dj * dj < side * side / 16.0f;
        v.data[at] = in ? 60.0f : -100.0f + (float)((i * 7 + j * 3) % 20);
        m.data[at] = (float)in;
    }
    ls_error err = {0};
    int rc = ls_volume_write(img, &v, LS_DT_I16, NULL, &err) || ls_volume_write(lab, &m, LS_DT_U8, NULL, &err);
    ls_volume_free(&v), ls_volume_free(&m);
    return rc;
}

static int count_in_file(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    char line[8192];
    while (fgets(line, sizeof line, f))
        for (const char *p = line; (p = strstr(p, needle)); p += strlen(needle)) n++;
    fclose(f);
    return n;
}

/* `livseg experiment` end to end on tiny synthetic scans: 3 to train on, 520 of one dataset to test (the
 * report's box plot once overflowed a buffer sized for fewer than ~170 cases a group, and kept at most 512
 * points a group): report.md, cases.csv and dice.svg hold every case; cases.csv has the review's flags. */
TEST(experiment_report) {
    const char *dir = test_tmpdir();
    char m[600], img[700], lab[700], args[4096], e[4096], path[800];
    snprintf(m, sizeof m, "%s/many.csv", dir);
    FILE *f = fopen(m, "w");
    REQUIRE(f, "cannot write %s", m);
    fprintf(f, "case,dataset,modality,image,label\n");
    for (int i = 0; i < 523; i++) {
        snprintf(img, sizeof img, "%s/many%d.nii.gz", dir, i);
        snprintf(lab, sizeof lab, "%s/many%d_liver.nii.gz", dir, i);
        REQUIRE(write_disc_scan(img, lab, i < 3 ? 48 : 16, i < 3 ? 3 : 1, (float)(i % 5)) == 0, "cannot write %s", img);
        fprintf(f, "c%d,%s,CT,%s,%s\n", i, i < 3 ? "tiny" : "many", img, lab);
    }
    fclose(f);
    snprintf(args, sizeof args,
             "experiment %s --train tiny --val-split 1 --test many --epochs 1 --size 32 --batch 2 --code-dim 8 "
             "--widths 8,8,8,8,8 --skip-width 4 --up-stages 2 --slices-per-epoch 0 --cache %s/cache -o %s/exp -q",
             m, dir, dir);
    double t = ls_now_for_tests();
    int rc = run(args, e, sizeof e);
    printf("  experiment on 520 test cases: %.1f s\n", ls_now_for_tests() - t);
    REQUIRE(rc == 0, "experiment: exit %d, %s", rc, e);
    snprintf(path, sizeof path, "%s/exp/cases.csv", dir);
    CHECK(count_in_file(path, ",many,cd,") == 520, "%s: %d test rows", path, count_in_file(path, ",many,cd,"));
    CHECK(count_in_file(path, "case,dataset,variant,dice,assd_mm,mssd_mm,pred_ml,ref_ml,review\n") == 1,
          "%s: no review column in the header", path);
    snprintf(path, sizeof path, "%s/exp/report.md", dir);
    CHECK(count_in_file(path, "| many |") == 520, "%s: %d case rows", path, count_in_file(path, "| many |"));
    snprintf(path, sizeof path, "%s/exp/dice.svg", dir);
    CHECK(count_in_file(path, "<circle") == 520 && count_in_file(path, "</svg>") == 1, "%s: %d points", path,
          count_in_file(path, "<circle"));
}

/* eval --ttest on result files of 5000 cases (it once read at most 4096, silently), paired by case in any
 * order, "nan" left out; t as computed here; a value that is no number, a missing or doubled column: one
 * line, exit 2. */
TEST(eval_ttest_files) {
    const char *dir = test_tmpdir();
    char a[600], b[600], args[2048], e[4096], text[4096];
    snprintf(a, sizeof a, "%s/ta.csv", dir);
    snprintf(b, sizeof b, "%s/tb.csv", dir);
    FILE *fa = fopen(a, "w"), *fb = fopen(b, "w");
    REQUIRE(fa && fb, "cannot write %s, %s", a, b);
    fprintf(fa, "\ncase,dice,assd_mm\n");
    fprintf(fb, "assd_mm,dice,case\n");
    enum { N = 5000 };
    double sum = 0, sum2 = 0;
    int k = 0;
    for (int i = 0; i < N; i++) {
        double da = 0.5 + 0.3 * sin(i), db = da + 0.01 + 0.02 * cos(1.7 * i);
        if (i < 3) fprintf(fa, "c%d,nan,1\n", i);
        else fprintf(fa, "c%d,%.9f,1\n", i, da), sum += da - db, sum2 += (da - db) * (da - db), k++;
    }
    for (int i = N - 1; i >= 0; i--) /* the other order: cases are paired by name */
        fprintf(fb, "2,%.9f,c%d\n", 0.5 + 0.3 * sin(i) + 0.01 + 0.02 * cos(1.7 * i), i);
    fclose(fa), fclose(fb);
    double mean = sum / k, sd = sqrt((sum2 - k * mean * mean) / (k - 1)), t = mean / (sd / sqrt(k));
    snprintf(args, sizeof args, "eval --ttest %s %s", a, b);
    int rc = run(args, e, sizeof e);
    last_stdout(text, sizeof text);
    const char *tp = strstr(text, "t = ");
    double got = tp ? atof(tp + 4) : 0;
    CHECK(rc == 0 && strstr(text, "4997 paired cases") && fabs(got - t) < 1e-3 * fabs(t), "exit %d, expected t = %.4f: %s%s",
          rc, t, text, e);
    fa = fopen(a, "a");
    fprintf(fa, "c5000,abc,1\n");
    fclose(fa);
    rc = run(args, e, sizeof e);
    CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, "ta.csv:5003: dice 'abc' is not a number"), "exit %d, %s", rc, e);
    snprintf(args, sizeof args, "eval --ttest %s %s --metric mssd_mm", b, b);
    rc = run(args, e, sizeof e);
    CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, "no column 'mssd_mm'"), "exit %d, %s", rc, e);
    /* A header naming a column twice: which one is meant cannot be told. */
    FILE *f = fopen(b, "w");
    fprintf(f, "case,dice,Dice\nc1,0.5,0.6\n");
    fclose(f);
    snprintf(args, sizeof args, "eval --ttest %s %s", b, b);
    rc = run(args, e, sizeof e);
    CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, "tb.csv: the header names 'dice' twice"), "exit %d, %s", rc, e);
    /* --pairs: a case name or path that would not fit is refused, not cut short. */
    char pairs[700], longname[300];
    memset(longname, 'x', 200), longname[200] = 0;
    snprintf(pairs, sizeof pairs, "%s/long.csv", dir);
    f = fopen(pairs, "w");
    fprintf(f, "case,pred,ref\n%s,p.nii.gz,r.nii.gz\n", longname);
    fclose(f);
    snprintf(args, sizeof args, "eval --pairs %s", pairs);
    rc = run(args, e, sizeof e);
    CHECK(rc == 2 && count_lines(e) == 1 && strstr(e, "long.csv:2: case name longer than 127"), "exit %d, %s", rc, e);
}

/* A directory holding two series: `info` lists them (exit 0), `info --series` reads the one named and
 * says which it is; a series of two echoes: `info` lists the echoes. */
TEST(info_series) {
    char cmd[4096], args[2048], e[4096], text[4096], d[800];
    const char *dir = test_tmpdir();
    snprintf(d, sizeof d, "%s/echoes", dir);
    REQUIRE(write_echo_dir(d, 2, 2) == 0, "cannot write %s", d);
    snprintf(args, sizeof args, "info %s", d);
    int rc = run(args, e, sizeof e);
    last_stdout(text, sizeof text);
    CHECK(rc == 0 && strstr(text, "DICOM, one series of 2 echoes: --echo N reads one") &&
              strstr(text, "series 1     5: MR, 4 images of 8x8, echoes 1 (2.3 ms), 2 (4.6 ms)\n               UID 1.2.3.4.8\n"),
          "info on two echoes: exit %d, %s%s", rc, e, text);
    snprintf(args, sizeof args, "info --echo 2 %s", d);
    rc = run(args, e, sizeof e);
    last_stdout(text, sizeof text);
    CHECK(rc == 0 && strstr(text, "8 x 8 x 2 voxels") && strstr(text, "min 200, max 201"), "info --echo 2: exit %d, %s%s", rc, e, text);

    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    snprintf(cmd, sizeof cmd, "mkdir -p %s/study && cp %s/dicom/totalseg_ct_dicom/* %s/dicom/dcmqi_ct_3slice/* %s/study/",
             dir, data, data, dir);
    REQUIRE(system(cmd) == 0, "%s", cmd);
    snprintf(args, sizeof args, "info %s/study", dir);
    rc = run(args, e, sizeof e);
    last_stdout(text, sizeof text);
    CHECK(rc == 0 && strstr(text, "DICOM, 2 series: --series S reads one") &&
              strstr(text, "series 2     \"CT Body 3.0\": CT, 20 images of 512x512\n") &&
              strstr(text, "series 1     2: CT, 3 images of 512x512\n"
                           "               UID 1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1\n"),
          "info: exit %d, %s%s", rc, e, text);
    snprintf(args, sizeof args, "info --series 2 %s/study", dir);
    rc = run(args, e, sizeof e);
    last_stdout(text, sizeof text);
    CHECK(rc == 0 && strstr(text, "512 x 512 x 3 voxels") && strstr(text, "  series       2: CT, 3 images of 512x512\n"),
          "info --series 2: exit %d, %s%s", rc, e, text);
}

/* `livseg eval` over a CSV of pairs, its per-case CSV, and the t-test between two result files. */
TEST(eval_pairs_and_ttest) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    const char *dir = test_tmpdir();
    char csv[600], out[600], args[4096], e[4096];
    snprintf(csv, sizeof csv, "%s/pairs.csv", dir);
    snprintf(out, sizeof out, "%s/results.csv", dir);
    char abs[1024];
    if (!realpath(data, abs)) snprintf(abs, sizeof abs, "%s", data);
    FILE *f = fopen(csv, "w");
    fprintf(f, "case,pred,ref\nsame,%s/btcv/btcv_03_liver.nii.gz,%s/btcv/btcv_03_liver.nii.gz\n"
               "chaos,%s/chaos_t2/chaos_t2_01_liver.nii.gz,%s/chaos_t2/chaos_t2_01_liver.nii.gz\n", abs, abs, abs, abs);
    fclose(f);
    snprintf(args, sizeof args, "eval --pairs %s --csv %s --json %s/results.json", csv, out, dir);
    CHECK(run(args, e, sizeof e) == 0, "eval --pairs failed: %s", e);
    f = fopen(out, "r");
    int lines = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) lines++;
    if (f) fclose(f);
    CHECK(lines == 3, "results.csv has %d lines", lines);
    snprintf(args, sizeof args, "eval --ttest %s %s", out, out);
    CHECK(run(args, e, sizeof e) == 0, "eval --ttest failed: %s", e);
    /* Grids that differ: one line, exit 2. */
    snprintf(args, sizeof args, "eval %s/btcv/btcv_00_liver.nii.gz %s/btcv/btcv_01_liver.nii.gz", abs, abs);
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, "grid"), "grid mismatch: %s", e);
    /* Columns are found by name: with ref first, the message still names pred (btcv_04) as the one that differs. */
    f = fopen(csv, "w");
    fprintf(f, "ref,case,pred\n%s/btcv/btcv_03_liver.nii.gz,x,%s/btcv/btcv_04_liver.nii.gz\n", abs, abs);
    fclose(f);
    snprintf(args, sizeof args, "eval --pairs %s", csv);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "btcv_04_liver.nii.gz: grid"), "columns by name: %s", e);
    /* What would be ignored or ambiguous is refused: one line each, exit 2. */
    const char *refused[][2] = {{"eval A B --csv C", "does not go with"}, {"eval --ttest A B --json C", "does not go with"},
                                {"eval --ttest A", "two files"}, {"eval --pairs A --csv C --json ./C", "both"},
                                {"eval --pairs A --metric dice", "does not go with"}};
    for (int i = 0; i < 5; i++) {
        CHECK(run(refused[i][0], e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, refused[i][1]), "%s: %s", refused[i][0], e);
    }
    f = fopen(csv, "w");
    fprintf(f, "case,pred,ref\n");
    fclose(f);
    snprintf(args, sizeof args, "eval --pairs %s", csv);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "no pairs"), "a header alone: %s", e);
    /* A byte order mark, quotes, spaces and capitals in the header are read; a column named twice is refused. */
    f = fopen(csv, "w");
    fprintf(f, "\xef\xbb\xbf\"Case\", Pred ,REF\nsame,%s/btcv/btcv_03_liver.nii.gz,%s/btcv/btcv_03_liver.nii.gz\n", abs, abs);
    fclose(f);
    CHECK(run(args, e, sizeof e) == 0, "a header with a BOM, quotes and capitals: %s", e);
    f = fopen(csv, "w");
    fprintf(f, "case,pred,ref,pred\nx,a,b,c\n");
    fclose(f);
    CHECK(run(args, e, sizeof e) == 2 && strstr(e, "twice"), "a column named twice: %s", e);
}

/* eval reads masks and pair lists; an output naming one of them is refused and the input left as it was. */
TEST(eval_never_writes_over_an_input) {
    const char *data = test_data_dir();
    if (!data) SKIP("../shared/data not found (set LIVSEG_DATA to the data directory)");
    const char *dir = test_tmpdir();
    char mask[600], csv[600], args[4096], e[4096];
    snprintf(mask, sizeof mask, "%s/mask.nii.gz", dir);
    snprintf(args, sizeof args, "cp %s/btcv/btcv_03_liver.nii.gz %s", data, mask);
    CHECK(system(args) == 0, "cannot copy a mask into %s", dir);
    struct stat before, after;
    stat(mask, &before);
    snprintf(csv, sizeof csv, "%s/pairs.csv", dir);
    FILE *f = fopen(csv, "w");
    fprintf(f, "case,pred,ref\nsame,mask.nii.gz,mask.nii.gz\n");
    fclose(f);
    snprintf(args, sizeof args, "eval %s %s --json %s", mask, mask, mask);
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, "over the input"), "--json PRED: %s", e);
    snprintf(args, sizeof args, "eval --pairs %s --csv %s", csv, mask);
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, "over the input"), "--csv a pair's mask: %s", e);
    snprintf(args, sizeof args, "eval --pairs %s --json %s", csv, csv);
    CHECK(run(args, e, sizeof e) == 2 && count_lines(e) == 1 && strstr(e, csv), "--json PAIRS.csv: %s", e);
    stat(mask, &after);
    CHECK(after.st_size == before.st_size && after.st_mtime == before.st_mtime, "the mask was rewritten");
    snprintf(args, sizeof args, "eval %s %s", mask, mask);
    CHECK(run(args, e, sizeof e) == 0, "the mask no longer reads: %s", e);
}

int main(int argc, char **argv) {
    (void)argc;
    test_livseg_path(argv[0], livseg, sizeof livseg);
    RUN(help_and_usage);
    RUN(blas_kernels);
    RUN(bad_input_one_line);
    RUN(train_and_experiment_usage);
    RUN(numeric_options);
    RUN(info_on_all_shared_data);
    RUN(info_series);
    RUN(experiment_report);
    RUN(eval_ttest_files);
    RUN(eval_pairs_and_ttest);
    RUN(eval_never_writes_over_an_input);
    return test_summary();
}
