/*
 * dino.h — pretraining the teacher with DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised
 * Vision Transformers") on CT/MR slices: a student ViT with a projection head, trained by AdamW to match
 * the output of an EMA teacher (the same network, its weights a moving average of the student's) across
 * crops of the same slice. Labels are never read. See docs/pretraining.md.
 *
 * One iteration (ls_dino_step; the order of facebookresearch/dino's main_dino.py train_one_epoch):
 *   1. teacher: the 2 global crops -> ViT class token -> head -> logits t[2B, K]
 *   2. student: the 2 global crops and the N local crops (two ViT passes, one per resolution) -> class
 *      tokens -> head -> logits s[(2+N)B, K]
 *   3. loss: q = softmax((t - centre) / tau_t), -sum q log softmax(s / 0.1), averaged over every (teacher
 *      crop, student crop) pair except a crop with itself; then centre = 0.9 centre + 0.1 mean(t)
 *   4. backward through the head and the ViT (ls_vit_backward); each parameter tensor's gradient clipped
 *      to norm clip_grad (DINO's clip_gradients); the prototype layer gets no update during the first
 *      freeze_last_layer epochs (its gradient cancelled: no moment update, no decay, no step counted)
 *   5. AdamW (torch's, per tensor: weight decay on weights, none on biases and norms, DINO's grouping:
 *      1-D tensors and biases are not decayed); lr, weight decay and teacher momentum from cosine
 *      schedules over iterations (lr after a linear warm-up), teacher temperature warmed up per epoch
 *   6. teacher = m teacher + (1 - m) student, for the ViT and the head
 *
 * Projection head (DINOHead, nlayers = 3, no batch norm, norm_last_layer): Linear(D, hidden) GELU
 * Linear(hidden, hidden) GELU Linear(hidden, bottleneck), L2-normalised, then a bias-free prototype layer
 * of K rows under weight normalisation with the gain fixed to 1 (each row of V divided by its norm).
 *
 * Crops (on the host, from grey slices of RAS volumes displayed and windowed as ls_prep_grey does,
 * stored at source_size^2): random resized crop (area fraction in [global_scale_min, 1] for the global
 * crops, [local_scale_min, local_scale_max] for the local ones, aspect ratio 3/4 - 4/3 log-uniform),
 * horizontal flip p 0.5, brightness and contrast jitter 0.4 with p 0.8, Gaussian blur (sigma 0.1 - 2.0
 * pixels at 224, scaled to the crop size; p 1.0 first global crop, 0.1 second, 0.5 local), solarisation
 * p 0.2 of the second global crop; then ImageNet normalisation of three equal channels.
 *
 * Determinism: every random draw comes from splitmix64 streams derived from (seed, epoch, iteration,
 * crop), so a run is the same bit for bit for the same configuration, data and thread count, and a run
 * resumed from its state file continues as if it had not stopped.
 *
 * Files in the output directory, written atomically after every epoch:
 *   teacher.safetensors   the EMA teacher's ViT with timm names and "arch" metadata: `livseg train
 *                         --teacher` and ls_teacher_open load it (split into teacher-0000i-of-0000M
 *                         shards of < 16 MiB when larger; give the first)
 *   state.safetensors     everything --resume needs: both networks, AdamW moments, centre, counters, log
 *   pretrain.jsonl        one JSON object per epoch
 */
#ifndef LS_DINO_H
#define LS_DINO_H

#include <stdint.h>

#include "manifest.h"
#include "vit.h"

typedef struct {
    /* data */
    char datasets[256];     /* comma-separated dataset names of the manifest; "" = every case */
    int limit;              /* at most this many cases per dataset (0: all) */
    int slices_per_epoch;   /* a random subset per epoch (0: every slice) */
    int source_size;        /* side of the stored grey slices the crops are cut from */
    /* networks */
    char arch[16];          /* vits16, ... or a custom dDEPTHwWIDTHhHEADSpPATCH[gGRID] (vit.h) */
    int head_hidden, head_bottleneck, out_dim;
    /* crops */
    int global_size, local_size, nlocal;
    float global_scale_min, local_scale_min, local_scale_max;
    /* loss */
    float student_temp, teacher_temp, warmup_teacher_temp, center_momentum;
    int warmup_teacher_temp_epochs;
    /* optimisation */
    int epochs, batch, warmup_epochs, freeze_last_layer;
    float lr, min_lr, weight_decay, weight_decay_end, momentum_teacher, clip_grad;
    uint64_t seed;
    /* files: every keep_every epochs the teacher is also kept as teacher-eNNN.safetensors (0: never), for
     * choosing an epoch afterwards (the loss can climb back to ln K: docs/pretraining.md) */
    int keep_every;
} ls_dino_config;

/* The CPU preset (the default) and "gpu" (DINO's ViT-S/16 recipe scaled to one GPU); see docs/pretraining.md. */
void ls_dino_config_default(ls_dino_config *c);
ls_status ls_dino_config_preset(ls_dino_config *c, const char *name, ls_error *err);
char *ls_dino_config_json(const ls_dino_config *c); /* one line; caller frees */
ls_status ls_dino_config_from_json(ls_dino_config *c, const char *json, ls_error *err);
ls_status ls_dino_config_check(const ls_dino_config *c, ls_error *err);

/* ------------------------------------------------------------------ projection head */

typedef struct {
    const ls_backend *be;
    int in_dim, hidden, bottleneck, K;
    float *params, *grads; /* backend memory, nparams each; layout w1 b1 w2 b2 w3 b3 v */
    size_t nparams;
    float *w1, *b1, *w2, *b2, *w3, *b3, *v; /* w1[hidden,in] ... w3[bottleneck,hidden], v[K,bottleneck] */
} ls_dino_head;

/* What a head forward of R rows keeps for its backward (carved from an arena). */
typedef struct {
    int R;
    const float *x;               /* the input [R, in] (the caller's, kept alive) */
    float *pre1, *pre2;           /* [R, hidden] pre-activations */
    float *act1, *act2;           /* [R, hidden] GELU outputs */
    float *zn, *znorm;            /* [R, bottleneck] normalised bottleneck and the row norms [R] */
    float *wn, *wnorm;            /* [K, bottleneck] normalised prototypes and their norms [K] */
} ls_dino_head_acts;

ls_status ls_dino_head_init(ls_dino_head *h, const ls_backend *be, int in_dim, int hidden, int bottleneck, int K,
                            uint64_t seed, ls_error *err);
void ls_dino_head_free(ls_dino_head *h);
/* Arena floats of a forward plus backward of R rows. */
size_t ls_dino_head_arena_floats(const ls_dino_head *h, int R);
/* x[R, in] -> logits[R, K]. */
void ls_dino_head_forward(ls_dino_head *h, ls_arena *ar, ls_dino_head_acts *a, const float *x, int R, float *logits);
/* ADDS dL/dparams into h->grads (allocated by init, zero it per step); WRITES dx[R, in] when not NULL. */
void ls_dino_head_backward(ls_dino_head *h, ls_arena *ar, const ls_dino_head_acts *a, const float *dlogits,
                           float *dx);

/* ------------------------------------------------------------------ the trainer's state */

typedef struct {
    ls_vit vit;
    ls_dino_head head;
} ls_dino_net;

/* One parameter tensor (for per-tensor clipping and decay). */
typedef struct {
    float *p, *g, *m, *v;
    size_t n;
    int decay, last_layer;
} ls_dino_tensor;

typedef struct {
    ls_dino_config cfg;
    const ls_backend *be;
    ls_dino_net student, teacher;
    float *center;                 /* [K] */
    float *m_vit, *v_vit, *m_head, *v_head; /* AdamW moments of the student */
    int step, step_last;           /* AdamW steps taken by every tensor / by the prototype layer */
    ls_dino_tensor *tensors;
    int ntensors;
    /* device buffers */
    ls_arena arena, harena, io;
    float *d_global, *d_local, *cls_t, *cls_s, *logit_t, *logit_s, *dlogit, *dcls, *loss_ws;
    double *d_loss; /* the loss op's slot */
} ls_dino;

/* Per-iteration settings (ls_dino_schedule computes them from the configuration). */
typedef struct {
    float lr, weight_decay, momentum, teacher_temp;
    int freeze_last_layer; /* 1: the prototype layer is not updated this iteration */
} ls_dino_sched;

/* Builds the student (random init from cfg->seed: timm's truncated normal 0.02, zero biases, unit norms),
 * the teacher as its copy, zero moments and centre. */
ls_status ls_dino_init(ls_dino *d, const ls_dino_config *c, const ls_backend *be, ls_error *err);
void ls_dino_free(ls_dino *d);

/* The schedules at iteration `it` of epoch `epoch` (iterations per epoch `niter`), as main_dino.py's
 * cosine_scheduler: lr linear from 0 over warmup_epochs then cosine to min_lr; weight decay cosine from
 * weight_decay to weight_decay_end; momentum cosine from momentum_teacher to 1; teacher temperature
 * linear over warmup_teacher_temp_epochs (per epoch), then constant. */
void ls_dino_schedule(const ls_dino_config *c, int niter, int epoch, int it, ls_dino_sched *s);

/* One iteration on crops in host memory: globals[2B, 3, G, G] and locals[nlocal*B, 3, L, L], crop-major
 * (crop v of item b is row v*B + b). *loss receives the DINO loss. ls_dino_step = ls_dino_queue_step, then
 * ls_dino_collect. */
ls_status ls_dino_step(ls_dino *d, const float *globals, const float *locals, const ls_dino_sched *s, double *loss,
                       ls_error *err);
/* Queues the whole iteration, update included, and returns without waiting for the device (on CUDA the crops
 * must stay unchanged until ls_dino_collect: give mem->host_alloc buffers, so their copies run while the
 * host works). */
ls_status ls_dino_queue_step(ls_dino *d, const float *globals, const float *locals, const ls_dino_sched *s,
                             ls_error *err);
/* Waits for the queued iteration and brings its loss back: LS_ERR_INPUT when it is not finite (the update
 * has been applied by then, as the loss is only known after it: the run must stop without saving). */
ls_status ls_dino_collect(ls_dino *d, double *loss, ls_error *err);

/* Writes the teacher's ViT (timm names, F32, "arch" metadata) to `path`, or as STEM-0000i-of-0000M shards
 * of < 16 MiB when larger; *first receives the file to give ls_teacher_open (may be NULL). */
ls_status ls_dino_export_teacher(const ls_dino *d, const char *path, char *first, size_t nfirst, ls_error *err);

/* ------------------------------------------------------------------ the run */

typedef struct {
    int epoch, epochs, iters_done, iters;
    double loss, images_per_s, lr;
} ls_dino_status;

typedef struct {
    void *ctx;
    void (*prepare)(void *ctx, const char *case_id, int done, int total); /* may be NULL */
    void (*iter)(void *ctx, const ls_dino_status *s);                     /* may be NULL */
    void (*epoch)(void *ctx, const char *json);                           /* may be NULL */
} ls_dino_hooks;

/* Pretrains on the manifest's images (labels ignored) into out_dir (created if absent; refused without
 * `resume` where out_dir holds a run; removed again if this call created it and fails before writing),
 * up to epoch `until` of the schedule (0: cfg->epochs). With `resume`, everything but `until` comes from
 * out_dir/state.safetensors and training continues after its last epoch. */
ls_status ls_dino_pretrain(const ls_dino_config *c, const ls_manifest *m, const char *out_dir, int resume, int until,
                           const ls_backend *be, const ls_dino_hooks *hooks, ls_error *err);

#endif
