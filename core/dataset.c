#include <stdlib.h>
#include <string.h>

#include "unlearn/dataset.h"

void ul_dataset_clear(ul_dataset *d)
{
    if (!d)
        return;
    free(d->train_x);
    free(d->train_y);
    free(d->test_x);
    free(d->test_y);
    memset(d, 0, sizeof *d);
}
