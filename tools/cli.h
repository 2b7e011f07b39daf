/*
 * cli.h — what the `livseg` subcommands share: each lives in tools/cmd_NAME.c as
 * `int cmd_NAME(int argc, char **argv)` (argv[0] is the subcommand's name) and returns the process
 * exit status: 0 success, 2 bad input, usage, or a device this machine lacks (one line on stderr
 * naming the file and the problem),
 * 3 I/O failure, 4 out of memory, 5 internal error.
 */
#ifndef LS_CLI_H
#define LS_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "livseg.h"
#include "train.h"

/* Prints "livseg: <msg>" for a failed call and returns its exit status. */
int cli_report(const ls_error *err);

/* An option that takes a value and sets one field of a settings struct (kind: i int, u uint64, f float,
 * s string of at most size-1 characters), and the setter shared by train, pretrain and probe: 0 when the
 * value does not parse (or, for integers, is negative or beyond int, or 2^63-1 for u; for floats, is not
 * finite), after one line saying what option o of subcommand cmd takes. */
typedef struct {
    const char *name;
    char kind;
    size_t off, size;
} cli_option;
int cli_set_option(const char *cmd, void *settings, const cli_option *o, const char *v);

/* 1 when `arg` is one of the NULL-terminated `names` (an option a parser knows). */
int cli_one_of(const char *arg, const char *const *names);

/* One line and 2 when the output `out` names the input `in` (either may be NULL: 0), else 0. */
int cli_over_input(const char *out, const char *in);
/* `input` is no directory: 2, with one line on stderr, when `pick` names a series or an echo (only a
 * DICOM directory has them); else 0. */
int cli_pick_needs_directory(const char *cmd, const ls_dicom_pick *pick, const char *input);

/* A numeric option's value `v` (option `opt` of subcommand `cmd`): the whole string must be an integer in
 * [lo, hi] (cli_int), a finite number in [lo, hi] (cli_float) or a seed, 0 to 2^63-1 as cli_set_option's
 * 'u' (cli_seed). Otherwise prints one line naming the option and the value and returns 0 (the caller exits 2). */
int cli_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out);
int cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, float *out);
int cli_seed(const char *cmd, const char *opt, const char *v, uint64_t *out);

/* 1 when argv[i] is -h or --help. */
int cli_is_help(const char *arg);

int cmd_info(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_experiment(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_probe(int argc, char **argv);

/* The training options shared by `train` and `experiment` (tools/cmd_train.c): when argv[*i] is one,
 * applies it to the configuration (advancing *i past its value) and returns 1; returns 0 when it is
 * not one; on a bad value prints one line and returns -2. */
int train_option(const char *cmd, ls_train_config *c, int argc, char **argv, int *i);


#endif
