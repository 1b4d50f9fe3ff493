#ifndef UNLEARN_STATS_H
#define UNLEARN_STATS_H
#include "common.h"
#endif
