/*
 * cli.h — what the `livseg` subcommands share: each lives in tools/cmd_NAME.c as
 * `int cmd_NAME(int argc, char **argv)` (argv[0] is the subcommand's name) and returns the process
 * exit status: 0 success, 2 bad input, usage, or a device this machine lacks (one line on stderr
 * naming the file and the problem),
 * 3 I/O failure, 4 out of memory, 5 internal error.
 */
#ifndef LS_CLI_H
#define LS_CLI_H

#include "livseg.h"
#include "train.h"

/* Prints "livseg: <msg>" for a failed call and returns its exit status. */
int cli_report(const ls_error *err);

/* 1 when argv[i] is -h or --help. */
int cli_is_help(const char *arg);

int cmd_info(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_experiment(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);

/* The training options shared by `train` and `experiment` (tools/cmd_train.c): when argv[*i] is one,
 * applies it to the configuration (advancing *i past its value) and returns 1; returns 0 when it is
 * not one; on a bad value prints one line and returns -2. */
int train_option(const char *cmd, ls_train_config *c, int argc, char **argv, int *i);


#endif
