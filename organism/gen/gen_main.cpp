// kvsteer-organism-gen: thin driver over the organism commands (see commands.h).
#include "organism/gen/commands.h"

int main(int argc, char** argv) { return kvsteer::organism::organism_main(argc, argv); }
