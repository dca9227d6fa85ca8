/*
 * CPU cache write-back and invalidation for memory shared between hosts that are not
 * cache-coherent with each other (e.g. CXL memory shared by separate machines).
 *
 * Python cannot emit these instructions, so this tiny module does.  The instruction is chosen
 * at import time from CPUID: CLWB (write back, keep the line) for write-back, CLFLUSHOPT or
 * CLFLUSH (write back and evict) for invalidation, each range followed by SFENCE so the
 * flushes are ordered before later stores (the log counters after a log entry).
 *
 * Functions take any object exporting a contiguous buffer (mmap, bytearray, memoryview) plus
 * an offset and a length, so Python never handles raw addresses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

enum { M_NONE = 0, M_CLFLUSH = 1, M_CLFLUSHOPT = 2, M_CLWB = 3 };

static int have_clflush, have_clflushopt, have_clwb;
static unsigned line_size = 64;

static void detect(void)
{
#if HAVE_X86
	unsigned a, b, c, d;
	if (__get_cpuid(1, &a, &b, &c, &d)) {
		have_clflush = (d >> 19) & 1;
		if (have_clflush && ((b >> 8) & 0xff))
			line_size = ((b >> 8) & 0xff) * 8;
	}
	if (__get_cpuid_max(0, NULL) >= 7) {
		__cpuid_count(7, 0, a, b, c, d);
		have_clflushopt = (b >> 23) & 1;
		have_clwb = (b >> 24) & 1;
	}
#endif
}

static int writeback_method(void)
{
	return have_clwb ? M_CLWB : have_clflushopt ? M_CLFLUSHOPT : have_clflush ? M_CLFLUSH : M_NONE;
}

static int invalidate_method(void)
{
	return have_clflushopt ? M_CLFLUSHOPT : have_clflush ? M_CLFLUSH : M_NONE;
}

static void flush_range(char *p, size_t len, int method)
{
#if HAVE_X86
	uintptr_t a = (uintptr_t)p & ~((uintptr_t)line_size - 1);
	uintptr_t end = (uintptr_t)p + len;
	switch (method) {
	case M_CLWB:
		for (; a < end; a += line_size)
			__asm__ volatile("clwb %0" : "+m"(*(volatile char *)a));
		break;
	case M_CLFLUSHOPT:
		for (; a < end; a += line_size)
			__asm__ volatile("clflushopt %0" : "+m"(*(volatile char *)a));
		break;
	case M_CLFLUSH:
		for (; a < end; a += line_size)
			__asm__ volatile("clflush %0" : "+m"(*(volatile char *)a));
		break;
	default:
		return;
	}
	__asm__ volatile("sfence" ::: "memory");
#else
	(void)p; (void)len; (void)method;
#endif
}

static PyObject *do_range(PyObject *args, int method)
{
	Py_buffer view;
	Py_ssize_t off = 0, len = -1;
	if (!PyArg_ParseTuple(args, "y*|nn", &view, &off, &len))
		return NULL;
	if (len < 0)
		len = view.len - off;
	if (off < 0 || len < 0 || off > view.len || len > view.len - off) {
		PyBuffer_Release(&view);
		PyErr_SetString(PyExc_ValueError, "range outside the buffer");
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS
	flush_range((char *)view.buf + off, (size_t)len, method);
	Py_END_ALLOW_THREADS
	PyBuffer_Release(&view);
	Py_RETURN_NONE;
}

static PyObject *py_writeback(PyObject *self, PyObject *args)
{
	(void)self;
	return do_range(args, writeback_method());
}

static PyObject *py_invalidate(PyObject *self, PyObject *args)
{
	(void)self;
	return do_range(args, invalidate_method());
}

static PyObject *py_fence(PyObject *self, PyObject *noargs)
{
	(void)self; (void)noargs;
#if HAVE_X86
	__asm__ volatile("sfence" ::: "memory");
#endif
	Py_RETURN_NONE;
}

static const char *names[] = {"none", "clflush", "clflushopt", "clwb"};

static PyObject *py_methods(PyObject *self, PyObject *noargs)
{
	(void)self; (void)noargs;
	return Py_BuildValue("(ssI)", names[writeback_method()], names[invalidate_method()], line_size);
}

static PyMethodDef methods[] = {
	{"writeback", py_writeback, METH_VARARGS, "writeback(buf, offset=0, length=-1): write back cache lines, then sfence"},
	{"invalidate", py_invalidate, METH_VARARGS, "invalidate(buf, offset=0, length=-1): write back and evict cache lines, then sfence"},
	{"fence", py_fence, METH_NOARGS, "sfence"},
	{"methods", py_methods, METH_NOARGS, "(writeback instruction, invalidate instruction, cache line size)"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_cacheflush", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cacheflush(void)
{
	detect();
	return PyModule_Create(&moddef);
}
