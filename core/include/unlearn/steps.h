#ifndef UNLEARN_STEPS_H
#define UNLEARN_STEPS_H
#include "plugin.h"
#endif
