"""Identifiers: fresh names, and the names generated C / C++ / CUDA / HIP code cannot use.

Users name tensors, stages and dims freely (any Python identifier); lowering and the
renderers turn those names into C identifiers. A name that C++ or the included headers
already mean something by (``float``, ``INFINITY``, ``errno``, ``threadIdx``,
``bitand``, ...) is *renamed* in generated code (``float_2``), never refused. The rule
(:func:`is_reserved`):

* C and C++ keywords (C++20) and the alternative tokens (``and``, ``bitand``, ...);
* names that look like macros: all capitals, digits and ``_``, three characters or more
  (``INFINITY``, ``NAN``, ``EOF``, ``INT32_MAX``, ``M_PI``, ``E2BIG``); one- and
  two-letter names (``A``, ``B``, ``QK``) stay as they are;
* names starting with ``_`` or containing ``__`` (reserved to the implementation);
* the lower-case macros and built-ins of the headers generated code includes
  (``errno``, ``assert``, ``stdin``, ``threadIdx``, ``warpSize``, ``printf``, ...) and
  the names generated code itself uses (``ditron``, ``std``, ``tid``, ``half``, ...).
"""
import re


def unique_name(base, used, c_safe=False):
    """Return a name not in ``used`` (a set) derived from ``base``, and add it to ``used``;
    with ``c_safe``, also one that generated code can use (see :func:`is_reserved`)."""
    if c_safe and is_reserved(base):
        base = re.sub(r"__+", "_", base)
        if base.startswith("_"):
            base = "v" + base
        if _MACRO_LIKE.match(base):
            base += "_v"             # a lower-case letter: no longer looks like a macro
    name, n = base, 1
    while name in used or (c_safe and is_reserved(name)):
        n += 1
        name = f"{base}_{n}"
    used.add(name)
    return name


C_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq
nullptr operator or or_eq private protected public register reinterpret_cast requires restrict
return short signed sizeof static static_assert static_cast struct switch template this
thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq _Bool _Complex _Imaginary
""".split())

# Lower-case names that headers define as macros or built-ins, and names generated code uses.
HEADER_NAMES = frozenset("""
errno assert offsetof setjmp longjmp stdin stdout stderr va_start va_end va_arg va_copy va_list
linux unix i386 signbit isnan isinf isfinite fpclassify
size_t ssize_t ptrdiff_t intptr_t uintptr_t max_align_t nullptr_t
int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t
printf fprintf sprintf snprintf puts malloc calloc realloc free exit abort memcpy memset memmove
threadIdx blockIdx blockDim gridDim warpSize clock clock64 dim3 cudaStream_t hipStream_t
float2 float4 int2 int4 uint2 uint4 half2 char4 uchar4 short2 double2 longlong2 ulonglong2
ditron std tid main check stream ptrs scalars nvshmem rocshmem half bfloat16 nv_bfloat16
div_error last_error block_error
""".split())

_MACRO_LIKE = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")


def is_reserved(name):
    """Whether ``name`` cannot be used as is in generated C / C++ / CUDA / HIP code."""
    return (name in C_KEYWORDS or name in HEADER_NAMES or bool(_MACRO_LIKE.match(name))
            or name.startswith("_") or "__" in name)
