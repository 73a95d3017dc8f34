/* The job kinds Kiln registers itself (jobs/builtin.c). */
#ifndef KILN_JOBS_BUILTIN_H
#define KILN_JOBS_BUILTIN_H

#include "core/config.h"

/* Before kiln_jobs_start; cfg must outlive the jobs. */
void kiln_jobs_register_builtin(const struct kiln_config *cfg);

#endif
