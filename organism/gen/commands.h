// The organism's command-line entry points: `gen`, `mixture` and `vocab`. The logic lives in
// plain functions so that `kvsteer organism gen|mixture|vocab` can reuse them; the
// kvsteer-organism-gen driver only calls organism_main().
#pragma once

#include <string>

#include "organism/gen/dataset.h"
#include "organism/gen/mixture.h"

namespace CLI {
class App;
}

namespace kvsteer::organism {

// Writes generate_items(options) as trace JSONL to `out` (atomically); returns the item count.
// Throws kvsteer::Error: InvalidArgument for bad options, Io when `out` cannot be written.
int run_gen(const GenOptions& options, const std::string& out);

// Writes build_mixture(options) as conversation JSONL to `out` (atomically); returns the count.
int run_mixture(const MixtureOptions& options, const std::string& out);

// Writes vocab_json(max_number) to `out` (atomically); returns the number of pieces.
int run_vocab(int max_number, const std::string& out);

// Adds the subcommands gen, mixture and vocab to `app`; each runs its command from its parse
// callback (so kvsteer::Error escapes from app.parse()). `defaults` are the flags' defaults
// (family, difficulty, shares; seed and n excepted): `kvsteer organism` passes the shipped
// model's recipe, the standalone driver the generic MixtureOptions{}.
void add_organism_commands(CLI::App& app, const MixtureOptions& defaults = {});

// The whole driver: parses argv, runs the command, prints "kvsteer: error: <message>" on
// failure. Returns 0 on success (and for --help), 2 for usage errors (bad flags, invalid
// option values), 1 for runtime errors (I/O).
int organism_main(int argc, const char* const* argv);

}  // namespace kvsteer::organism
