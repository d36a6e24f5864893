/* Shared between the natural/ files (not a public header). */
#ifndef NCMI_NATURAL_INTERNAL_H
#define NCMI_NATURAL_INTERNAL_H

/* A thread that decoded images with libvips calls this before it ends
 * (frees libvips' per-thread buffers; nothing without libvips). */
void nat_vips_thread_done(void);

#endif
