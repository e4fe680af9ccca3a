// Start-up of the bare-metal programs that run under QEMU with semihosting
// (the firmware harness, the library test's program, the kernel test):
// CMSIS' reset handler ends in __cmsis_start (it copies .data), which calls
// _start: clear .bss, run the C++ constructors, open the semihosting stdio
// handles, main, and leave through semihosting exit so that QEMU ends with
// main's status. Linked with -nostartfiles: newlib's rdimon crt0 hangs on the
// Cortex-M55 board (mps3-an547). -nostartfiles also leaves out
// crti/crtbegin: provide the empty _init that __libc_init_array calls (and
// the _fini that the Armv8-M newlib-nano libraries refer to), and the handle
// that static objects' destructor registration refers to (they are never
// destroyed: main exits the program).

#include <cstdint>
#include <cstdlib>

extern "C" void _init(void) {}
extern "C" void _fini(void) {}
extern "C" {
void* __dso_handle = &__dso_handle;
}
extern "C" void __libc_init_array(void);
extern "C" void initialise_monitor_handles(void);
extern "C" __attribute__((noreturn)) void _start(void) {
  extern uint32_t __bss_start__, __bss_end__;
  for (uint32_t* word = &__bss_start__; word < &__bss_end__; ++word) *word = 0;
  __libc_init_array();
  initialise_monitor_handles();
  extern int main(void);
  exit(main());
}
