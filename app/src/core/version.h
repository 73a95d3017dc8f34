/* The build's version string (set by the Makefile from VERSION and git). */
#ifndef KILN_VERSION_H
#define KILN_VERSION_H

const char *kiln_version(void);

#endif
