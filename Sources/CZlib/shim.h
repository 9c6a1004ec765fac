// zlib (Debian: zlib1g-dev). PaxosLog uses crc32 for record and frame checksums.
#include <zlib.h>
