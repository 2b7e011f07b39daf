/*
 * rng.h — a small deterministic random generator (splitmix64) for initialisation, dropout masks and
 * augmentation: state is explicit, so the same seed gives the same numbers on every machine.
 */
#ifndef LS_RNG_H
#define LS_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t state;
} ls_rng;

static inline uint64_t ls_rng_next(ls_rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1), never 0 or 1. */
static inline double ls_rng_uniform(ls_rng *r) { return ((double)(ls_rng_next(r) >> 11) + 0.5) / 9007199254740992.0; }

/* Standard normal (Box-Muller). */
static inline double ls_rng_normal(ls_rng *r) {
    return sqrt(-2 * log(ls_rng_uniform(r))) * cos(6.283185307179586 * ls_rng_uniform(r));
}

#endif
