/*
 * `kiln gen resource`: writes a new declared resource into a Kiln tree (the
 * declaration, a migration per dialect and its black-box tests), as Phoenix's
 * `mix phx.gen.json` does, so that `make` is the only step left. See
 * docs/RESOURCES.md.
 */
#ifndef KILN_GEN_RESOURCE_H
#define KILN_GEN_RESOURCE_H

/*
 * `kiln gen ...`: argv[0] is "gen". Returns the exit status: 0 when the
 * files are written, 2 for a usage or validation error (one line on
 * stderr, nothing written), 1 when a file could not be written (nothing
 * left behind).
 */
int kiln_gen_main(int argc, char **argv);

#endif
