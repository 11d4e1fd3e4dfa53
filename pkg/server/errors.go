package server

import (
	"net/http"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/modelreg/modelreg/pkg/wire"
)

// errQueryInvalid is the model API's own code, registered beside the
// distribution spec's so every error body has the spec's shape.
var errQueryInvalid = errcode.Register("modelreg", errcode.ErrorDescriptor{
	Value:          wire.CodeQueryInvalid,
	Message:        "the query is not valid",
	Description:    "A search query or order_by does not parse; the detail gives the position.",
	HTTPStatusCode: http.StatusBadRequest,
})

// errPartsInvalid is the uploads-in-parts extension's code for a request
// that does not fit the upload (a part missing at completion, a part being
// written twice at once); distribution's BLOB_UPLOAD_INVALID answers 404,
// which a client would read as "the upload is gone".
var errPartsInvalid = errcode.Register("modelreg", errcode.ErrorDescriptor{
	Value:          "PARTS_INVALID",
	Message:        "the upload in parts cannot take this request",
	Description:    "A part is missing at completion; the detail lists the missing parts.",
	HTTPStatusCode: http.StatusBadRequest,
})

// errPartBusy answers a part request while another request is still
// writing that part: typically the request of a client that was killed,
// which the server reads until its connection is dropped. The client
// waits and asks what is held (Retry-After).
var errPartBusy = errcode.Register("modelreg", errcode.ErrorDescriptor{
	Value:          "PART_BUSY",
	Message:        "another request is writing this part",
	Description:    "Another request is still writing the part; retry after the Retry-After seconds, from what the upload's status then says is held.",
	HTTPStatusCode: http.StatusConflict,
})

// The distribution-spec codes the extension answers with.
var (
	errDenied          = errcode.ErrorCodeDenied
	errUnauthorized    = errcode.ErrorCodeUnauthorized
	errTooMany         = errcode.ErrorCodeTooManyRequests
	errUnsupported     = errcode.ErrorCodeUnsupported
	errUnknown         = errcode.ErrorCodeUnknown
	errManifestInvalid = v2.ErrorCodeManifestInvalid
	errManifestUnknown = v2.ErrorCodeManifestUnknown
	errNameInvalid     = v2.ErrorCodeNameInvalid
	errNameUnknown     = v2.ErrorCodeNameUnknown
	errDigestInvalid   = v2.ErrorCodeDigestInvalid
	errBlobUnknown     = v2.ErrorCodeBlobUnknown
	errSizeInvalid     = v2.ErrorCodeSizeInvalid
)

// serveError answers with code's HTTP status and a distribution-spec error
// body carrying msg (and detail, when not nil).
func serveError(w http.ResponseWriter, code errcode.ErrorCode, msg string, detail ...any) {
	e := code.WithMessage(msg)
	if len(detail) > 0 {
		e = e.WithDetail(detail[0])
	}
	errcode.ServeJSON(w, e)
}
