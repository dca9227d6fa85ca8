/*
 * A minimal C FUSE server for the copy-path benchmark (bench/bench_cfuse.py): one read-only file,
 * whose bytes are one extent of a mapped famfs image or devdax device, served with libfuse's
 * low-level API (Debian libfuse3-dev) the way daxmode's server serves a file on the copy path:
 * the whole device mapped MAP_SHARED, files opened with direct_io, a READ answered with the
 * mapped bytes (no copy in the server; the kernel copies into the reader's pages).
 *
 *   cfuse_famfs SOURCE OFFSET SIZE MOUNTPOINT [-s] [-o opt,...]
 *
 * It exists only to measure against: no directories, no writes, no cache flushing.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char *base;      /* the mapping of SOURCE */
static uint64_t f_off;  /* the file's extent: offset and size in SOURCE */
static uint64_t f_size;
static const char fname[] = "big";
#define FILE_INO 2

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)f_size;
		st->st_blocks = (blkcnt_t)((f_size + 511) / 512);
	}
	st->st_blksize = 2 << 20;
}

static void op_init(void *ud, struct fuse_conn_info *conn)
{
	(void)ud;
	conn->max_readahead = 1 << 20;
	conn->max_write = 1 << 20;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, fname) != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = FILE_INO;
	e.attr_timeout = 86400.0;
	e.entry_timeout = 86400.0;
	fill_attr(FILE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino != FUSE_ROOT_ID && ino != FILE_INO) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 86400.0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	if (ino != FILE_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((uint64_t)off >= f_size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if ((uint64_t)off + size > f_size)
		size = (size_t)(f_size - (uint64_t)off);
	fuse_reply_buf(req, base + f_off + (uint64_t)off, size);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	struct stat st;
	uint64_t len;
	int fd, rc, i, single = 0;

	if (argc < 5) {
		fprintf(stderr, "usage: %s SOURCE OFFSET SIZE MOUNTPOINT [-s] [-o opts]\n", argv[0]);
		return 2;
	}
	f_off = strtoull(argv[2], NULL, 0);
	f_size = strtoull(argv[3], NULL, 0);
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	len = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : f_off + f_size;
	len = (len + (2 << 20) - 1) & ~(uint64_t)((2 << 20) - 1);
	if (f_off + f_size > len) {
		fprintf(stderr, "extent past the end of %s\n", argv[1]);
		return 1;
	}
	base = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	fuse_opt_add_arg(&args, argv[0]);
	for (i = 5; i < argc; i++) {
		if (strcmp(argv[i], "-s") == 0)
			single = 1;
		else
			fuse_opt_add_arg(&args, argv[i]);
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		return 1;
	if (fuse_session_mount(se, argv[4]) != 0)
		return 1;
	fprintf(stderr, "cfuse_famfs: serving %s [%#llx, +%llu) at %s/%s\n", argv[1],
		(unsigned long long)f_off, (unsigned long long)f_size, argv[4], fname);
	if (single) {
		rc = fuse_session_loop(se);
	} else {
		cfg = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(cfg, 0);
		fuse_loop_cfg_set_max_threads(cfg, 4);
		rc = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return rc ? 1 : 0;
}
