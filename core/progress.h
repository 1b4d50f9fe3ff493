/* Private: progress display. On a terminal one line is redrawn in place
 * (at most 10 times a second); otherwise plain log lines are written at
 * most every `log_interval` seconds and at the end of every epoch. */
#ifndef UL_PROGRESS_H
#define UL_PROGRESS_H

#include <stdio.h>

#include "unlearn/train.h"

typedef struct ul_progress {
    FILE *out;           /* NULL: silent */
    bool tty;
    double log_interval;
    double last;
    char label[160];     /* e.g. "mlp w=0.5 original" */
    int width;           /* columns of the terminal line */
} ul_progress;

void ul_progress_init(ul_progress *p, FILE *out);
void ul_progress_set_label(ul_progress *p, const char *fmt, ...) UL_PRINTF(2, 3);
/* ul_train_progress_fn; user is a ul_progress*. */
void ul_progress_train(const ul_train_report *r, void *user);
/* A line of its own (clears a pending terminal line first). */
void ul_progress_log(ul_progress *p, const char *fmt, ...) UL_PRINTF(2, 3);
/* Formats seconds as "1h02m", "3m05s" or "12s". */
void ul_format_duration(double s, char *buf, size_t cap);

#endif
