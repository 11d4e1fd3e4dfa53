package weights

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/modelreg/modelreg/internal/fixture"
)

func TestSafetensors(t *testing.T) {
	b := fixture.Safetensors([]fixture.Tensor{
		{Name: "embed.weight", DType: "BF16", Shape: []int64{32, 16}},
		{Name: "lm_head.weight", DType: "BF16", Shape: []int64{16, 32}},
		{Name: "norm.weight", DType: "F32", Shape: []int64{16}},
	}, 1)
	f, err := Read("model.safetensors", bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Format != "safetensors" || f.Tensors != 3 || f.Parameters != 32*16*2+16 || fmt.Sprint(f.DTypes) != "[BF16 F32]" {
		t.Errorf("%+v", f)
	}
}

func TestGGUF(t *testing.T) {
	b := fixture.GGUF(map[string]any{"general.architecture": "llama", "general.file_type": uint32(15), "llama.context_length": uint32(8192), "general.name": "tiny"},
		1000, []fixture.Tensor{{Name: "tok_embd", DType: "12", Shape: []int64{64, 1000}}, {Name: "out", DType: "14", Shape: []int64{64, 1000}}, {Name: "norm", DType: "0", Shape: []int64{64}}}, 2)
	f, err := Read("m.Q4_K_M.gguf", bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Format != "gguf" || f.Architecture != "llama" || f.Quantization != "Q4_K_M" || f.ContextLength != 8192 || f.Tensors != 3 ||
		f.Parameters != 2*64*1000+64 || fmt.Sprint(f.DTypes) != "[F32 Q4_K Q6_K]" {
		t.Errorf("%+v", f)
	}
}

// Headers written by whoever pushed the file: lengths that lie, formats
// that are something else, all refused with a message, nothing read past
// the bounds.
func TestHostileHeaders(t *testing.T) {
	long := make([]byte, 16)
	binary.LittleEndian.PutUint64(long, 1<<40)
	st := fixture.Safetensors([]fixture.Tensor{{Name: "w", DType: "F32", Shape: []int64{4}}}, 1)
	badShape := bytes.Replace(fixture.Safetensors([]fixture.Tensor{{Name: "w", DType: "F32", Shape: []int64{40}}}, 1), []byte("[40]"), []byte("[-4]"), 1)
	gg := fixture.GGUF(map[string]any{"general.architecture": "llama"}, 0, nil, 1)
	hugeArray := fixture.GGUF(map[string]any{}, 3, nil, 1)
	// The token count is the 8 bytes before the first token string.
	i := bytes.Index(hugeArray, []byte("tok0")) - 16
	binary.LittleEndian.PutUint64(hugeArray[i:], 1<<62)
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"a.safetensors", long, "header length"},
		{"a.safetensors", st[:20], "header"},
		{"a.safetensors", badShape, "not a valid size"},
		{"a.gguf", []byte("GGML\x03\x00\x00\x00"), "magic"},
		{"a.gguf", gg[:30], "gguf"},
		{"a.gguf", hugeArray, "bound"},
		{"a.bin", st, "not a safetensors or GGUF"},
	} {
		_, err := Read(c.name, bytes.NewReader(c.b), int64(len(c.b)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (%d bytes): %v, want an error naming %q", c.name, len(c.b), err, c.want)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add(fixture.Safetensors([]fixture.Tensor{{Name: "w", DType: "F32", Shape: []int64{4}}}, 1), true)
	f.Add(fixture.GGUF(map[string]any{"general.architecture": "llama", "llama.context_length": uint32(4)}, 2, []fixture.Tensor{{Name: "w", DType: "1", Shape: []int64{2, 2}}}, 1), false)
	f.Fuzz(func(t *testing.T, b []byte, st bool) {
		name := "x.gguf"
		if st {
			name = "x.safetensors"
		}
		Read(name, bytes.NewReader(b), int64(len(b))) // must not panic or hang
	})
}

// countingReaderAt counts the reads that reach it.
type countingReaderAt struct {
	r     *bytes.Reader
	reads int
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads++
	return c.r.ReadAt(p, off)
}

// A GGUF header of a 50,000-token vocabulary (about 700 KiB) is read in a
// few block reads,
// with the same facts as from memory.
func TestBlocks(t *testing.T) {
	b := fixture.GGUF(map[string]any{"general.architecture": "llama"}, 50000, []fixture.Tensor{{Name: "w", DType: "1", Shape: []int64{4, 4}}}, 3)
	c := &countingReaderAt{r: bytes.NewReader(b)}
	f, err := Read("m.gguf", Blocks(c, int64(len(b))), int64(len(b)))
	if err != nil || f.Parameters != 16 || f.Architecture != "llama" {
		t.Fatalf("%+v %v", f, err)
	}
	if c.reads > 6 {
		t.Errorf("%d reads of a %d-byte header", c.reads, len(b))
	}
}
