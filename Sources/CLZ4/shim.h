// liblz4 (Debian: liblz4-dev). The block API is all PaxosLog uses.
#include <lz4.h>
