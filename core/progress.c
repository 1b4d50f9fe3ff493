#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void ul_progress_init(ul_progress *p, FILE *out)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = out && isatty(fileno(out));
    p->log_interval = 30.0;
    p->width = 100;
    struct winsize ws;
    if (p->tty && ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        p->width = ws.ws_col;
}

void ul_progress_set_label(ul_progress *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->label, sizeof p->label, fmt, ap);
    va_end(ap);
}

void ul_format_duration(double s, char *buf, size_t cap)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, cap, "%lds", t);
}

void ul_progress_train(const ul_train_report *r, void *user)
{
    ul_progress *p = user;
    if (!p->out)
        return;
    double t = now_s();
    bool due = p->tty ? t - p->last >= 0.1 : t - p->last >= p->log_interval;
    if (!due && !r->epoch_done)
        return;
    p->last = t;
    char eta[32];
    ul_format_duration(r->eta_s, eta, sizeof eta);
    char line[512];
    snprintf(line, sizeof line,
             "%s epoch %d/%d step %lld/%lld loss %.4f acc %.4f %.0f img/s ETA %s", p->label,
             r->epoch, r->epochs, (long long)r->step, (long long)r->steps_per_epoch, r->loss,
             r->accuracy, r->images_per_s, eta);
    if (p->tty) {
        if ((int)strlen(line) > p->width - 1)
            line[p->width - 1] = '\0';
        fprintf(p->out, "\r\033[K%s", line);
        if (r->epoch_done)
            fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s\n", line);
    }
    fflush(p->out);
}

void ul_progress_log(ul_progress *p, const char *fmt, ...)
{
    if (!p->out)
        return;
    if (p->tty)
        fputs("\r\033[K", p->out);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    fputc('\n', p->out);
    fflush(p->out);
}
