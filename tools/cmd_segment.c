/*
 * cmd_segment.c — `livseg segment INPUT -o MASK.nii.gz`: the main job.
 */
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "preview.h"
#include "progress.h"
#include "segment.h"
#include "util.h"
#include "volume.h"

/* The model shipped with livseg, under the parent of the livseg executable's directory: a build directory's
 * (build/livseg, beside the repository's models/) or an installed one's (PREFIX/bin, `make install`). */
static const char *const default_model_dirs[] = {"models", "share/livseg/models"};
#define DEFAULT_MODEL_NAME "default.safetensors"

static void segment_usage(FILE *f) {
    fprintf(f,
            "usage: livseg segment INPUT -o MASK.nii.gz [options]\n\n"
            "Segments the liver in a CT or MR volume. INPUT is a NIfTI file (.nii, .nii.gz) or a DICOM\n"
            "directory: one series, or a study's tree (subdirectories are read) with --series naming one.\n"
            "The mask (uint8, 1 = liver) is written with exactly the input's grid and header geometry.\n\n"
            "options:\n"
            "  -o, --output FILE   the mask to write (.nii.gz or .nii), required\n"
            "  --series S          for a DICOM directory holding several series (a whole study): the one\n"
            "                      to segment, by SeriesNumber, SeriesDescription or SeriesInstanceUID\n"
            "                      (without it such a directory is refused with a list of its series;\n"
            "                      livseg info DIR lists them with their modality, size and UID)\n"
            "  --echo N            for a DICOM series of several echoes (in- and opposed-phase T1): the\n"
            "                      one to segment, by EchoNumbers (1, 2, ...)\n"
            "  --volume N          for a 4-D NIfTI file (a dynamic series, contrast phases in one file):\n"
            "                      the volume to segment, 1 being the first (livseg info FILE counts them);\n"
            "                      the mask is 3-D, on the file's spatial grid\n"
            "  --model FILE        trained model (default: $LIVSEG_MODEL, else the model shipped with this\n"
            "                      livseg: models/" DEFAULT_MODEL_NAME " of the repository it was built in,\n"
            "                      or PREFIX/share/livseg/models/ when installed with make install)\n"
            "  --teacher FILE      teacher weights, when the model was trained with a teacher from a file\n"
            "                      (default: that file's name in the model's directory)\n"
            "  --prob FILE         also write the liver probability (float32) on the input grid\n"
            "  --stats FILE.json   also write a JSON summary: liver volume (mL), mean and std intensity\n"
            "                      inside, bounding box (mm, RAS), seconds per stage, the checks below;\n"
            "                      for DICOM, the series segmented (UID, number, description)\n"
            "  --preview FILE.png  also write a PNG: axial, coronal and sagittal slices through the liver with\n"
            "                      the mask outlined in red (patient's right on the image's left)\n"
            "  --modality M        ct, mr or auto (default auto: a DICOM series' Modality tag, else CT\n"
            "                      when values reach -100 HU or below)\n"
            "  --threshold P       probability threshold (default 0.5)\n"
            "  --no-largest        keep every connected component, not only the largest\n"
            "  --no-fill           do not fill holes\n"
            "  --batch N           slices per teacher call (default 8 on the CPU, 32 on a GPU)\n"
            "  --threads N         CPU threads, also the processes that decode a compressed DICOM\n"
            "                      series (default: all cores)\n"
            "  --device D          cpu (default) or cuda; on cuda the networks' matrix products run on TF32\n"
            "                      tensor cores (a third faster; masks within Dice 0.9994 of float32 on three\n"
            "                      scans), LIVSEG_CUDA_TF32=0 in the environment keeps float32\n"
            "  -q, --quiet         no progress bars (the DICOM read's, the slices')\n\n"
            "Checks of the mask: after segmenting, livseg checks that the mask looks like one whole liver.\n"
            "Each failed check prints 'INPUT: check the mask (NAME): why' on stderr (also with -q) and is\n"
            "named in --stats' review.flags: empty (no liver found), cut_inferior and cut_superior (the\n"
            "liver reaches an end of the scan: it may not be whole), small (under 400 mL, not cut), large\n"
            "(over 4000 mL), left (not on the patient's right: a left-right error in the file, or another\n"
            "organ), spine_anterior (CT: the spine in front, an anterior-posterior error in the file),\n"
            "fragmented and unsure (the model was not confident). The mask is still written and the\n"
            "exit status is 0: look at such a mask (--preview) before using it. The checks catch gross\n"
            "failures, not a mediocre boundary (docs/segment.md).\n\n"
            "Exit status 0 on success, 2 on bad input (one line on stderr says which file and why);\n"
            "every output is checked before the work starts, and written atomically, never over an input.\n");
}

typedef struct {
    const char *input, *output, *model, *teacher, *prob, *stats, *preview, *modality, *device, *series;
    int threads, quiet, batch, largest, fill, echo, volume;
    float threshold;
    char model_path[4096]; /* the default model's path, when neither --model nor $LIVSEG_MODEL gives one */
} seg_args;

/* The options that take a value. */
static const char *const valued[] = {"-o", "--output", "--series", "--echo", "--volume", "--model", "--teacher",
                                     "--prob", "--stats", "--preview", "--modality", "--device", "--threshold",
                                     "--batch", "--threads", NULL};

/* The shipped model (default_model_dirs) into a->model; else 2, with one line naming the places looked at:
 * running livseg from another directory must not depend on the current one. */
static int find_default_model(seg_args *a) {
    char exe[4096], looked[2 * 4096 + 8] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash = NULL;
    if (n > 0) {
        exe[n] = 0;
        slash = strrchr(exe, '/');
    }
    if (slash) *slash = 0, slash = strrchr(exe, '/'); /* PREFIX/bin/livseg -> PREFIX */
    if (slash) *slash = 0;
    for (size_t i = 0; slash && i < sizeof default_model_dirs / sizeof *default_model_dirs; i++) {
        int w = snprintf(a->model_path, sizeof a->model_path, "%s/%s/" DEFAULT_MODEL_NAME, exe, default_model_dirs[i]);
        if (w > 0 && (size_t)w < sizeof a->model_path && access(a->model_path, R_OK) == 0) {
            a->model = a->model_path;
            return -1;
        }
        size_t used = strlen(looked);
        snprintf(looked + used, sizeof looked - used, "%s%s", i ? " or " : "", a->model_path);
    }
    fprintf(stderr, "livseg segment: no default model (%s%s); give --model FILE or set LIVSEG_MODEL\n",
            slash ? "none at " : "cannot locate the livseg executable", looked);
    return 2;
}

static int parse(int argc, char **argv, seg_args *a) {
    const char *env = getenv("LIVSEG_MODEL");
    *a = (seg_args){.model = env && *env ? env : NULL, .modality = "auto", .device = "cpu", .batch = 0,
                    .largest = 1, .fill = 1, .threshold = 0.5f};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(s)) {
            segment_usage(stdout);
            return 0;
        }
        if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) a->quiet = 1;
        else if (!strcmp(s, "--no-largest")) a->largest = 0;
        else if (!strcmp(s, "--no-fill")) a->fill = 0;
        else if (s[0] == '-' && s[1] && !cli_one_of(s, valued)) {
            fprintf(stderr, "livseg segment: unknown option '%s' (see livseg segment --help)\n", s);
            return 2;
        } else if (s[0] == '-' && (!v || (v[0] == '-' && v[1] && !isdigit((unsigned char)v[1])))) {
            /* `--stats --prob p.nii.gz` would write the stats into a file named --prob */
            fprintf(stderr, "livseg segment: option %s needs a value%s%s\n", s, v ? ", not " : "", v ? v : "");
            return 2;
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) a->output = argv[++i];
        else if (!strcmp(s, "--series")) a->series = argv[++i];
        else if (!strcmp(s, "--model")) a->model = argv[++i];
        else if (!strcmp(s, "--teacher")) a->teacher = argv[++i];
        else if (!strcmp(s, "--prob")) a->prob = argv[++i];
        else if (!strcmp(s, "--stats")) a->stats = argv[++i];
        else if (!strcmp(s, "--preview")) a->preview = argv[++i];
        else if (!strcmp(s, "--modality")) a->modality = argv[++i];
        else if (!strcmp(s, "--device")) a->device = argv[++i];
        else if (!strcmp(s, "--threshold")) {
            if (!cli_float("segment", s, argv[++i], 0, 1, &a->threshold)) return 2;
        } else if (!strcmp(s, "--batch")) {
            if (!cli_int("segment", s, argv[++i], 1, 4096, &a->batch)) return 2;
        } else if (!strcmp(s, "--echo")) {
            if (!cli_int("segment", s, argv[++i], 1, 65535, &a->echo)) return 2;
        } else if (!strcmp(s, "--volume")) {
            if (!cli_int("segment", s, argv[++i], 1, 1 << 30, &a->volume)) return 2;
        } else if (!strcmp(s, "--threads")) {
            if (!cli_int("segment", s, argv[++i], 0, 4096, &a->threads)) return 2;
        }
        else if (s[0] == '-' || a->input) {
            fprintf(stderr, "livseg segment: unexpected argument '%s' (see livseg segment --help)\n", s);
            return 2;
        } else a->input = s;
    }
    if (!a->input || !a->output) {
        fprintf(stderr, "livseg segment: %s (see livseg segment --help)\n",
                !a->input ? "no input given: livseg segment INPUT -o MASK.nii.gz" : "no output given (-o MASK.nii.gz)");
        return 2;
    }
    return a->model ? -1 : find_default_model(a);
}

/* What a run used and how long its stages took, besides what ls_segment_result holds. "start" (backend,
 * model and teacher) and "read" run at the same time, on two threads. */
typedef struct {
    const ls_backend *be;
    double start, read, write, total;
    const ls_dicom_series *series; /* a DICOM input's, else NULL */
    int echo;                      /* --echo, 0 when not given */
    int volume;                    /* --volume, 0 when not given */
} run_info;

/* Which DICOM series (and echo) was segmented: the record a clinical engineer files with the mask. */
static json_t *series_json(const ls_dicom_series *s, int echo) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:i, s:i}", "uid", s->uid, "number", s->number, "description",
                          s->description, "modality", s->modality, "images", s->images, "frames", s->frames);
    if (j && echo) json_object_set_new(j, "echo", json_integer(echo));
    return j;
}

/* The review's flags by name and the figures they rest on (NaN, for an empty mask, as null). */
static json_t *review_json(const ls_review *rv) {
    json_t *flags = json_array();
    for (int b = 0; flags && b < LS_REVIEW_NFLAGS; b++)
        if (rv->flags & (1u << b)) json_array_append_new(flags, json_string(ls_review_name((ls_review_flag)(1u << b))));
    return json_pack("{s:o, s:[f,f], s:o, s:o, s:f, s:f}", "flags", flags, "end_area", rv->end_area[0],
                     rv->end_area[1], "right_mm", isnan(rv->right_mm) ? json_null() : json_real(rv->right_mm),
                     "spine_mm", isnan(rv->spine_mm) ? json_null() : json_real(rv->spine_mm), "kept_fraction",
                     rv->kept_fraction, "unsure_fraction", rv->unsure_fraction);
}

/* One line per failed check, also under -q: a mask to look at before it is used. */
static void print_review(const char *input, const ls_review *rv) {
    char line[512];
    for (int b = 0; b < LS_REVIEW_NFLAGS; b++)
        if (rv->flags & (1u << b)) {
            ls_review_describe(rv, (ls_review_flag)(1u << b), line, sizeof line);
            fprintf(stderr, "%s: check the mask (%s): %s\n", input, ls_review_name((ls_review_flag)(1u << b)), line);
        }
}

static int write_stats(const seg_args *a, const ls_segment_result *r, const char *teacher_id, const run_info *ri) {
    const ls_mask_stats *s = &r->stats;
    /* teacher and decoder are compute times only on the CPU; on CUDA the calls just queue work. */
    json_t *sec = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "start", ri->start, "read", ri->read, "predict",
                            r->seconds_predict, "resample", r->seconds_resample, "postprocess", r->seconds_post, "write",
                            ri->write, "total", ri->total);
    if (sec && ri->be->device == LS_DEV_CPU) {
        json_object_set_new(sec, "teacher", json_real(r->seconds_teacher));
        json_object_set_new(sec, "decoder", json_real(r->seconds_decoder));
    }
    json_t *j = sec ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:f, s:I, s:f, s:f, s:I, s:{s:[f,f,f], s:[f,f,f]}, s:o}",
                                "input", a->input, "model", a->model, "teacher", teacher_id, "device",
                                ls_device_name(ri->be->device), "precision", ls_precision_name(ri->be->precision), "modality",
                                ls_modality_name(r->modality), "liver_volume_ml", s->volume_ml, "liver_voxels",
                                (json_int_t)s->voxels, "mean_intensity", s->mean, "std_intensity", s->std, "components",
                                (json_int_t)r->components, "bbox_mm_ras", "min", s->bbox_min[0], s->bbox_min[1],
                                s->bbox_min[2], "max", s->bbox_max[0], s->bbox_max[1], s->bbox_max[2], "seconds", sec)
                    : NULL;
    if (j) json_object_set_new(j, "review", review_json(&r->review));
    if (j && ri->volume) json_object_set_new(j, "volume", json_integer(ri->volume));
    if (j && ri->series) json_object_set_new(j, "dicom_series", series_json(ri->series, ri->echo));
    char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    ls_error err = {0};
    ls_status st = text ? ls_write_file_atomic(a->stats, text, strlen(text), a->input, &err)
                        : ls_fail(&err, LS_ERR_NOMEM, "%s: cannot format JSON", a->stats);
    free(text);
    return st ? cli_report(&err) : 0;
}

/* Every output is checked before the work (which takes seconds to minutes): writable, not an input (the
 * scan, the model, the teacher), not given for two outputs, and named for its kind (.nii/.nii.gz, .json,
 * .png), so that none can replace a model or teacher file (a teacher beside the model is found later).
 * What can still fail later (a full disk) leaves no partial file, as each output is atomic, though an
 * earlier output may then be there without a later one. */
static int check_outputs(const seg_args *a) {
    const char *out[] = {a->output, a->prob, a->stats, a->preview}, *opt[] = {"-o", "--prob", "--stats", "--preview"};
    const char *in[] = {a->input, a->model, a->teacher};
    for (int i = 0; i < 4; i++) {
        if (!out[i]) continue;
        if (!*out[i]) {
            fprintf(stderr, "livseg segment: %s was given an empty file name\n", opt[i]);
            return 2;
        }
        static const char *const kind[] = {".nii or .nii.gz", ".nii or .nii.gz", ".json", ".png"};
        int named = i < 2 ? ls_ends_with(out[i], ".nii") || ls_ends_with(out[i], ".nii.gz")
                          : ls_ends_with(out[i], i == 2 ? ".json" : ".png");
        if (!named) {
            fprintf(stderr, "livseg: %s: %s must end in %s\n", out[i], opt[i], kind[i]);
            return 2;
        }
        for (int j = 0; j < i; j++)
            if (ls_same_target(out[i], out[j])) {
                fprintf(stderr, "livseg: %s: given for both %s and %s\n", out[i], opt[j], opt[i]);
                return 2;
            }
        for (int k = 0; k < 3; k++)
            if (cli_over_input(out[i], in[k])) return 2;
        ls_error err = {0};
        if (ls_output_check(out[i], &err)) return cli_report(&err);
    }
    return 0;
}

/* The input is read on its own thread while the backend starts and the model and teacher load (on CUDA,
 * context creation and weight upload take as long as the read). For a DICOM series that thread only waits
 * for the volume: the reader process is forked before, while no other thread exists, since a child forked
 * while another thread holds a lock (the allocator's) waits forever (seen under ASan: the model loading on
 * the main thread, the child stuck in malloc). */
typedef struct {
    const char *path;
    int threads, quiet, volume; /* volume: --volume, 0 when not given */
    ls_dicom_job *job; /* a DICOM series' reader, begun */
    int dicom;
    ls_dicom_series series; /* a DICOM input's, once read */
    ls_volume vol; /* in RAS order */
    ls_geom src_geom;
    ls_error err;
    ls_status status;
    double seconds;
} reader;

static void *read_input(void *p) {
    reader *r = p;
    if (r->threads > 0) omp_set_num_threads(r->threads); /* a new thread starts from OpenMP's defaults */
    double t = ls_now();
    if (r->job) {
        /* The only bar while the model loads: nothing else prints until the read thread is joined. */
        progress bar;
        progress_init(&bar, "read", "files", r->quiet);
        ls_volume v;
        r->status = ls_dicom_end(r->job, progress_update, &bar, &v, &r->series, &r->err);
        progress_end(&bar);
        r->job = NULL;
        if (!r->status) r->status = ls_volume_take_ras(&v, &r->vol, &r->src_geom, &r->err);
    } else {
        r->status = ls_volume_read_ras_volume(r->path, r->volume, &r->vol, &r->src_geom, &r->err);
    }
    r->seconds += ls_now() - t;
    return NULL;
}

int cmd_segment(int argc, char **argv) {
    seg_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0 || (rc = check_outputs(&a))) return rc;
    double t_start = ls_now();
    ls_error err = {0};
    ls_segment_opts o;
    ls_segment_opts_default(&o);
    o.threshold = a.threshold, o.keep_largest = a.largest, o.fill_holes = a.fill, o.batch = a.batch;
    o.keep_prob = a.prob != NULL;
    ls_modality mod;
    if (strcmp(a.modality, "auto") != 0) {
        if (ls_modality_parse(a.modality, &mod, &err)) return cli_report(&err);
        o.modality = (int)mod;
    }
    ls_device dev;
    if (ls_device_parse(a.device, &dev, &err)) return cli_report(&err);
    reader rd = {.path = a.input, .threads = a.threads, .quiet = a.quiet, .volume = a.volume};
    struct stat sb;
    ls_dicom_pick pick = {a.series, a.echo};
    int is_dir = stat(a.input, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (is_dir && a.volume) {
        fprintf(stderr, "livseg segment: --volume picks a volume of a 4-D NIfTI file; %s is a directory\n", a.input);
        return 2;
    }
    if (is_dir) {
        double t = ls_now();
        int readers = a.threads > 0 ? a.threads : omp_get_max_threads();
        rd.status = ls_dicom_begin(a.input, &pick, readers, &rd.job, &rd.err);
        rd.dicom = 1;
        rd.seconds = ls_now() - t;
    } else if ((rc = cli_pick_needs_directory("segment", &pick, a.input))) {
        return rc;
    }
    pthread_t th;
    int threaded = !rd.status && pthread_create(&th, NULL, read_input, &rd) == 0;
    ls_backend be;
    ls_status s = ls_backend_init(&be, dev, a.threads, &err);
    int have_be = !s;
    if (have_be) ls_backend_prefer(&be, LS_PREC_TF32); /* inference only: docs/gpu.md measures its masks */
    ls_model m;
    ls_model_info info;
    ls_teacher t;
    ls_segment_result r = {0};
    if (!s) s = ls_model_load(&m, &info, &be, a.model, &err);
    if (!s && (s = ls_segment_teacher(&t, &be, &m, &info, a.teacher, a.model, &err)) != LS_OK) ls_model_free(&m);
    int loaded = !s;
    run_info ri = {.be = &be, .start = ls_now() - t_start, .echo = a.echo, .volume = a.volume};
    if (threaded) pthread_join(th, NULL);
    else if (!rd.status) read_input(&rd);
    /* Errors in the order the work was asked for: device, model, then input. */
    if (!s && rd.status) s = rd.status, err = rd.err;
    ls_volume in = rd.vol;
    ri.read = rd.seconds;
    if (rd.dicom) ri.series = &rd.series;
    progress bar;
    progress_init(&bar, "segment", "slices", a.quiet);
    if (!s) s = ls_segment_ras(&in, &rd.src_geom, &t, &m, &o, progress_update, &bar, &r, &err);
    double t_write = ls_now();
    if (!s) s = ls_segment_write_mask(a.output, &r, a.input, &err);
    if (!s && a.prob) s = ls_volume_write(a.prob, &r.prob, LS_DT_F32, a.input, &err);
    if (!s && a.preview) s = ls_preview_write_png(a.preview, &r.ras, r.ras_mask, r.window_lo, r.window_hi, a.input, &err);
    ri.write = ls_now() - t_write;
    progress_end(&bar);
    rc = s ? cli_report(&err) : 0;
    ri.total = ls_now() - t_start;
    if (!rc && a.stats) rc = write_stats(&a, &r, t.id, &ri);
    if (!rc) print_review(a.input, &r.review);
    char on[48] = "";
    if (have_be && be.device == LS_DEV_CUDA) snprintf(on, sizeof on, " on cuda (%s)", ls_precision_name(be.precision));
    if (!rc && !a.quiet)
        fprintf(stderr, "%s: liver %.1f mL (%s, %lld components before clean-up) -> %s in %.1f s%s\n", a.input,
                r.stats.volume_ml, ls_modality_name(r.modality), (long long)r.components, a.output, ls_now() - t_start, on);
    ls_segment_result_free(&r);
    ls_volume_free(&in);
    if (loaded) {
        ls_teacher_close(&t);
        ls_model_free(&m);
    }
    if (have_be) ls_backend_free(&be);
    return rc;
}
