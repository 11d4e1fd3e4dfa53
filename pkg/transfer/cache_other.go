//go:build !unix

package transfer

import "os"

// inode is 0 where os.FileInfo carries no inode (Windows, wasm): the
// digest cache then trusts size and modification time alone, as git does
// on those systems.
func inode(os.FileInfo) uint64 { return 0 }
