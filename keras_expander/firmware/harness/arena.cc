// keras-expander firmware harness: the static tensor arena, KE_ARENA_BYTES bytes (default 1 MiB) in .bss.
// It has its own translation unit so that the arena search, which relinks the firmware with each arena size,
// recompiles this file only, not main.cc.
#include <cstddef>
#include <cstdint>

#ifndef KE_ARENA_BYTES
#define KE_ARENA_BYTES (1024 * 1024)
#endif

alignas(16) uint8_t g_tensor_arena[KE_ARENA_BYTES];
extern const size_t g_tensor_arena_bytes = KE_ARENA_BYTES;
