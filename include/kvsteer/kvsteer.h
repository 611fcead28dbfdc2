// Umbrella header of the kvsteer library.
#pragma once

#include "kvsteer/backend.h"
#include "kvsteer/batcher.h"
#include "kvsteer/checkpoint_file.h"
#include "kvsteer/diagnosis.h"
#include "kvsteer/error.h"
#include "kvsteer/file_io.h"
#include "kvsteer/generation.h"
#include "kvsteer/model.h"
#include "kvsteer/session.h"
#include "kvsteer/steering.h"
#include "kvsteer/types.h"
#include "kvsteer/vector_file.h"
