/*
 * rng.h — a small deterministic random generator (splitmix64) for initialisation, dropout masks and
 * augmentation: state is explicit, so the same seed gives the same numbers on every machine.
 */
#ifndef LS_RNG_H
#define LS_RNG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
} ls_rng;

#define LS_RNG_GAMMA 0x9e3779b97f4a7c15ull

static inline uint64_t ls_rng_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t ls_rng_next(ls_rng *r) { return ls_rng_mix(r->state += LS_RNG_GAMMA); }

/* Uniform in (0, 1), never 0 or 1, from one 64-bit output. */
static inline double ls_rng_unit(uint64_t x) { return ((double)(x >> 11) + 0.5) / 9007199254740992.0; }
static inline double ls_rng_uniform(ls_rng *r) { return ls_rng_unit(ls_rng_next(r)); }

/* Standard normal (Box-Muller) from two uniforms, the first for the radius. */
static inline double ls_rng_box_muller(double u1, double u2) { return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2); }
static inline double ls_rng_normal(ls_rng *r) {
    double u1 = ls_rng_uniform(r);
    return ls_rng_box_muller(u1, ls_rng_uniform(r));
}

/* The normal that the (j+1)-th ls_rng_normal call on a generator in state `state` returns: splitmix64 jumps
 * to any output, so draws can be made in parallel. */
static inline double ls_rng_normal_at(uint64_t state, uint64_t j) {
    return ls_rng_box_muller(ls_rng_unit(ls_rng_mix(state + (2 * j + 1) * LS_RNG_GAMMA)),
                             ls_rng_unit(ls_rng_mix(state + (2 * j + 2) * LS_RNG_GAMMA)));
}

/* out[i] = (float)(z * std) for z = ls_rng_normal_at(state, first + i) when |z| <= cut, NaN when not: the same
 * bits as that formula, in parallel, and vectorised (AVX2) when `level` on ls_cpu_vector_level's scale (ops.h;
 * at most the CPU's own) is 2 or more: rng.c says how the vector results are made exact. */
void ls_rng_trunc_normals_at(uint64_t state, uint64_t first, size_t n, double std, double cut, int level,
                             float *out);

#endif
