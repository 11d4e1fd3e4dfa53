package server

import (
	"errors"
	"io"
)

// sizedSeeker is a ReadSeeker of a known size (a stored blob), read from
// wherever concat last seeked it.
type sizedSeeker struct {
	io.ReadSeeker
	size int64
}

// concat reads several ReadSeekers of known sizes as one, seekable: what
// http.ServeContent needs to answer Range requests on a tar layer made of
// a header, a stored blob and a trailer, without copying the blob.
type concat struct {
	parts []io.ReadSeeker
	sizes []int64
	size  int64
	off   int64
	// cur is the part off falls in, positioned there (-1: to seek).
	cur int
}

func newConcat(parts ...io.ReadSeeker) *concat {
	c := &concat{parts: parts, cur: -1}
	for _, p := range parts {
		var n int64
		switch s := p.(type) {
		case *sizedSeeker:
			n = s.size
		case interface{ Size() int64 }:
			n = s.Size()
		}
		c.sizes = append(c.sizes, n)
		c.size += n
	}
	return c
}

func (c *concat) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += c.off
	case io.SeekEnd:
		offset += c.size
	default:
		return 0, errors.New("concat: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("concat: negative position")
	}
	c.off, c.cur = offset, -1
	return offset, nil
}

func (c *concat) Read(p []byte) (int, error) {
	if c.off >= c.size {
		return 0, io.EOF
	}
	if c.cur < 0 {
		// Find the part and position it.
		start := int64(0)
		for i, n := range c.sizes {
			if c.off < start+n {
				if _, err := c.parts[i].Seek(c.off-start, io.SeekStart); err != nil {
					return 0, err
				}
				c.cur = i
				break
			}
			start += n
		}
	}
	end := int64(0)
	for _, n := range c.sizes[:c.cur+1] {
		end += n
	}
	if int64(len(p)) > end-c.off {
		p = p[:end-c.off]
	}
	n, err := c.parts[c.cur].Read(p)
	c.off += int64(n)
	if c.off == end {
		c.cur = -1 // the next read positions the next part
		if err == io.EOF {
			err = nil
		}
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF // a part shorter than its size
	}
	return n, err
}
