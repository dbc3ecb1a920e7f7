package fs

import "golang.org/x/sys/unix"

// errNoAttr is what getxattr returns for an absent attribute.
const errNoAttr = unix.ENOATTR
