// The opening of every assembly function of the keras-expander kernels
// (Thumb-2 on Cortex-M4, M7, M33; Helium on Cortex-M55). An __asm__ block
// starts with KE_THUMB_FUNCTION_MACRO, which selects unified Thumb syntax and
// defines the assembler macro `KE_FUNCTION name`: the global Thumb function
// `name` in its own section (so that --gc-sections drops the ones a model
// does not call), word-aligned. The block ends with `.purgem KE_FUNCTION`,
// so that the next block of the same file can define it again.

#ifndef KERAS_EXPANDER_FIRMWARE_KERNELS_THUMB_FUNCTION_H_
#define KERAS_EXPANDER_FIRMWARE_KERNELS_THUMB_FUNCTION_H_

#define KE_THUMB_FUNCTION_MACRO                    \
  "  .syntax unified\n"                            \
  "  .thumb\n"                                     \
  "  .macro KE_FUNCTION name\n"                    \
  "  .section .text.\\name, \"ax\", %progbits\n" \
  "  .align 2\n"                                   \
  "  .global \\name\n"                             \
  "  .type \\name, %function\n"                    \
  "  .thumb_func\n"                                \
  "\\name:\n"                                      \
  "  .endm\n"

#endif  // KERAS_EXPANDER_FIRMWARE_KERNELS_THUMB_FUNCTION_H_
