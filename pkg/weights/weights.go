// Package weights reads what the header of a weights file says about the
// model (safetensors, GGUF): tensor count, parameter count, data types,
// and for GGUF the architecture, quantization and context length. Only
// the header is read (a few KiB to a few MiB at the start of the file,
// through an io.ReaderAt, so a registry blob can be read with Range
// requests), never the weights, and every length in it is bounded, since
// the header comes from whoever pushed the file.
package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"
)

// Facts are what a weights file's header says. Zero fields are unknown.
type Facts struct {
	// Format is "safetensors" or "gguf".
	Format string `json:"format"`
	// Tensors is the number of tensors.
	Tensors int64 `json:"tensors"`
	// Parameters is the number of weights: the sum over tensors of the
	// product of their dimensions.
	Parameters int64 `json:"parameters"`
	// DTypes are the tensors' data types (safetensors: F32, BF16, …;
	// GGUF: F16, Q4_K, …), sorted.
	DTypes []string `json:"dtypes,omitempty"`
	// Architecture (GGUF general.architecture, e.g. llama).
	Architecture string `json:"architecture,omitempty"`
	// Quantization (GGUF general.file_type, e.g. Q4_K_M).
	Quantization string `json:"quantization,omitempty"`
	// ContextLength (GGUF <architecture>.context_length).
	ContextLength int64 `json:"contextLength,omitempty"`
}

// Limits on what a header may make the reader do.
const (
	// MaxSafetensorsHeader is the safetensors format's own bound.
	MaxSafetensorsHeader = 100 << 20
	// MaxGGUFHeader bounds the bytes read of a GGUF file's metadata and
	// tensor infos (a tokenizer vocabulary of 256k entries is about 5 MiB).
	MaxGGUFHeader = 64 << 20
	maxTensors    = 1 << 20
)

// ErrNotWeights says a file is not in a format this package reads.
var ErrNotWeights = errors.New("not a safetensors or GGUF file")

// Read reads the header of the weights file named name (its extension
// picks the format) of size bytes.
func Read(name string, r io.ReaderAt, size int64) (*Facts, error) {
	switch strings.ToLower(path.Ext(name)) {
	case ".safetensors":
		return ReadSafetensors(r, size)
	case ".gguf":
		return ReadGGUF(r, size)
	}
	return nil, ErrNotWeights
}

// Supported says whether Read reads files named name.
func Supported(name string) bool {
	e := strings.ToLower(path.Ext(name))
	return e == ".safetensors" || e == ".gguf"
}

// Merge adds the facts of another file of the same model (a shard):
// counts add up, data types are united, the first file's GGUF facts stay.
func (f *Facts) Merge(o *Facts) {
	if f.Format == "" {
		f.Format = o.Format
	} else if o.Format != "" && o.Format != f.Format && !strings.Contains(f.Format, o.Format) {
		f.Format += "+" + o.Format
	}
	f.Tensors += o.Tensors
	f.Parameters += o.Parameters
	for _, d := range o.DTypes {
		if !slices.Contains(f.DTypes, d) {
			f.DTypes = append(f.DTypes, d)
		}
	}
	slices.Sort(f.DTypes)
	if f.Architecture == "" {
		f.Architecture, f.Quantization, f.ContextLength = o.Architecture, o.Quantization, o.ContextLength
	}
}

// ReadSafetensors reads a safetensors header: an 8-byte little-endian
// length, then that many bytes of JSON naming each tensor's dtype and shape.
func ReadSafetensors(r io.ReaderAt, size int64) (*Facts, error) {
	var n [8]byte
	if _, err := r.ReadAt(n[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading the header length: %w", err)
	}
	hl := binary.LittleEndian.Uint64(n[:])
	if hl < 2 || hl > MaxSafetensorsHeader || int64(hl) > size-8 {
		return nil, fmt.Errorf("safetensors: header length %d is not within the file (%d bytes) and the format's 100 MB", hl, size)
	}
	buf := make([]byte, hl)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading the header: %w", err)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(buf, &header); err != nil {
		return nil, fmt.Errorf("safetensors: the header is not JSON: %w", err)
	}
	f := &Facts{Format: "safetensors"}
	for name, raw := range header {
		if name == "__metadata__" {
			continue
		}
		var t struct {
			DType string  `json:"dtype"`
			Shape []int64 `json:"shape"`
		}
		if err := json.Unmarshal(raw, &t); err != nil || t.DType == "" {
			return nil, fmt.Errorf("safetensors: tensor %q has no dtype and shape", name)
		}
		n, err := product(t.Shape)
		if err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", name, err)
		}
		f.Tensors++
		f.Parameters += n
		if !slices.Contains(f.DTypes, t.DType) {
			f.DTypes = append(f.DTypes, t.DType)
		}
	}
	slices.Sort(f.DTypes)
	return f, nil
}

func product(dims []int64) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return 0, fmt.Errorf("shape %v is not a valid size", dims)
		}
		n *= d
	}
	return n, nil
}

// GGUF value types.
const (
	ggufU8 = iota
	ggufI8
	ggufU16
	ggufI16
	ggufU32
	ggufI32
	ggufF32
	ggufBool
	ggufString
	ggufArray
	ggufU64
	ggufI64
	ggufF64
)

// ggufFileTypes names general.file_type values (llama.cpp's llama_ftype).
var ggufFileTypes = map[uint64]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
	10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
	16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
	22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
	28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}

// ggmlTypes names tensor types (ggml_type).
var ggmlTypes = map[uint32]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
	10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
	17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
	23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
	34: "TQ1_0", 35: "TQ2_0",
}

// ggufReader reads a GGUF header sequentially, bounded by MaxGGUFHeader.
type ggufReader struct {
	r   io.ReaderAt
	off int64
	end int64
	err error
}

func (g *ggufReader) bytes(n uint64) []byte {
	if g.err != nil {
		return nil
	}
	if n > uint64(g.end-g.off) {
		g.err = fmt.Errorf("gguf: a field of %d bytes at offset %d runs past the header's bound (%d bytes)", n, g.off, g.end)
		return nil
	}
	b := make([]byte, n)
	if _, err := g.r.ReadAt(b, g.off); err != nil {
		g.err = fmt.Errorf("gguf: reading at offset %d: %w", g.off, err)
		return nil
	}
	g.off += int64(n)
	return b
}

func (g *ggufReader) u32() uint32 {
	b := g.bytes(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (g *ggufReader) u64() uint64 {
	b := g.bytes(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (g *ggufReader) str() string { return string(g.bytes(g.u64())) }

// scalar reads a value of type t as an unsigned number or a string (what
// the facts need); other values are skipped.
func (g *ggufReader) value(t uint32, depth int) (num uint64, s string) {
	sizes := map[uint32]uint64{ggufU8: 1, ggufI8: 1, ggufBool: 1, ggufU16: 2, ggufI16: 2, ggufU32: 4, ggufI32: 4, ggufF32: 4, ggufU64: 8, ggufI64: 8, ggufF64: 8}
	switch t {
	case ggufString:
		return 0, g.str()
	case ggufArray:
		if depth > 2 {
			g.err = errors.New("gguf: arrays nested too deep")
			return
		}
		et, n := g.u32(), g.u64()
		if sz, ok := sizes[et]; ok {
			if n > uint64(g.end) {
				g.err = fmt.Errorf("gguf: an array of %d values is past the header's bound", n)
				return
			}
			g.bytes(sz * n)
			return
		}
		for i := uint64(0); i < n && g.err == nil; i++ {
			g.value(et, depth+1)
		}
		return
	}
	sz, ok := sizes[t]
	if !ok {
		g.err = fmt.Errorf("gguf: unknown value type %d", t)
		return
	}
	b := g.bytes(sz)
	if b == nil {
		return
	}
	var buf [8]byte
	copy(buf[:], b)
	return binary.LittleEndian.Uint64(buf[:]), ""
}

// ReadGGUF reads a GGUF header (versions 2 and 3): metadata key-values,
// then tensor infos.
func ReadGGUF(r io.ReaderAt, size int64) (*Facts, error) {
	g := &ggufReader{r: r, end: min(size, MaxGGUFHeader)}
	if magic := g.bytes(4); g.err != nil || !bytes.Equal(magic, []byte("GGUF")) {
		return nil, fmt.Errorf("gguf: no GGUF magic at the start of the file")
	}
	if v := g.u32(); v < 2 || v > 3 {
		return nil, fmt.Errorf("gguf: version %d; versions 2 and 3 are read", v)
	}
	tensors, kvs := g.u64(), g.u64()
	if tensors > maxTensors || kvs > maxTensors {
		return nil, fmt.Errorf("gguf: %d tensors and %d metadata entries: more than this reader accepts", tensors, kvs)
	}
	f := &Facts{Format: "gguf", Tensors: int64(tensors)}
	meta := map[string]any{}
	for i := uint64(0); i < kvs && g.err == nil; i++ {
		key := g.str()
		t := g.u32()
		num, s := g.value(t, 0)
		if t == ggufString {
			meta[key] = s
		} else if t != ggufArray {
			meta[key] = num
		}
	}
	for i := uint64(0); i < tensors && g.err == nil; i++ {
		g.str() // name
		dims := g.u32()
		if dims > 8 {
			return nil, fmt.Errorf("gguf: a tensor of %d dimensions", dims)
		}
		shape := make([]int64, dims)
		for d := range shape {
			v := g.u64()
			if v > math.MaxInt64 {
				return nil, errors.New("gguf: a dimension past int64")
			}
			shape[d] = int64(v)
		}
		typ := g.u32()
		g.u64() // offset
		n, err := product(shape)
		if err != nil {
			return nil, fmt.Errorf("gguf: %w", err)
		}
		f.Parameters += n
		name, ok := ggmlTypes[typ]
		if !ok {
			name = fmt.Sprintf("type%d", typ)
		}
		if !slices.Contains(f.DTypes, name) {
			f.DTypes = append(f.DTypes, name)
		}
	}
	if g.err != nil {
		return nil, g.err
	}
	slices.Sort(f.DTypes)
	if a, ok := meta["general.architecture"].(string); ok {
		f.Architecture = a
		if n, ok := meta[a+".context_length"].(uint64); ok {
			f.ContextLength = int64(n)
		}
	}
	if ft, ok := meta["general.file_type"].(uint64); ok {
		f.Quantization = ggufFileTypes[ft]
		if f.Quantization == "" {
			f.Quantization = fmt.Sprintf("type%d", ft)
		}
	}
	return f, nil
}

// Blocks wraps a ReaderAt whose reads are costly (a Range request, a seek
// on a stored blob) for the header readers, which make many small reads
// close together: it reads ahead in blocks, the first of 64 KiB (most
// headers fit), each next one twice as large up to 4 MiB (a GGUF
// vocabulary of several MiB takes a handful of reads), and keeps the last.
func Blocks(r io.ReaderAt, size int64) io.ReaderAt {
	return &blocks{r: r, size: size, next: 64 << 10}
}

type blocks struct {
	r    io.ReaderAt
	size int64
	at   int64 // offset of buf
	buf  []byte
	next int64 // size of the next block read
}

func (b *blocks) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= b.size {
			return n, io.EOF
		}
		if o < b.at || o >= b.at+int64(len(b.buf)) {
			want := min(max(b.next, int64(len(p)-n)), b.size-o)
			b.next = min(2*b.next, 4<<20)
			buf := make([]byte, want)
			m, err := b.r.ReadAt(buf, o)
			if int64(m) < want {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			b.at, b.buf = o, buf
		}
		n += copy(p[n:], b.buf[o-b.at:])
	}
	return n, nil
}
