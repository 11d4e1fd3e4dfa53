// Package mediatypes holds every media type and annotation key that modelreg
// reads or writes. Keeping them in one place is what lets another
// implementation (or a plain `oras push`) produce artifacts modelreg accepts;
// docs/format.md documents each of them.
package mediatypes

import "strings"

// CNCF ModelPack media types: the model body is written in this format so
// that other ModelPack tools (modctl, CRI-O model mounts) can read it.
const (
	// ArtifactTypeModel marks an image manifest as a model version.
	ArtifactTypeModel = "application/vnd.cncf.model.manifest.v1+json"
	// ModelConfig is the config blob of a model version.
	ModelConfig = "application/vnd.cncf.model.config.v1+json"

	// LayerWeight holds model weights (safetensors, gguf, pytorch, onnx ...).
	LayerWeight = "application/vnd.cncf.model.weight.v1"
	// LayerWeightConfig holds files that configure the weights
	// (config.json, tokenizer files, generation config).
	LayerWeightConfig = "application/vnd.cncf.model.weight.config.v1"
	// LayerDoc holds documentation (README, model card, licence).
	LayerDoc = "application/vnd.cncf.model.doc.v1"
	// LayerCode holds source code (training or inference scripts).
	LayerCode = "application/vnd.cncf.model.code.v1"
	// LayerDataset holds data files shipped with the model.
	LayerDataset = "application/vnd.cncf.model.dataset.v1"
)

// Layer encodings, appended to a Layer* base with a dot. modelreg writes Raw
// (one file per layer, never compressed, so weights can be mounted and
// deduplicated); it reads all four.
const (
	EncodingRaw     = "raw"
	EncodingTar     = "tar"
	EncodingTarGzip = "tar+gzip"
	EncodingTarZstd = "tar+zstd"
)

// Legacy and third-party producers that modelreg reads (never writes).
const (
	// LegacyArtifactTypeModel is the pre-CNCF name of the ModelPack artifact type.
	LegacyArtifactTypeModel = "application/vnd.cnai.model.manifest.v1+json"
	// LegacyPrefix is the prefix of every pre-CNCF ModelPack media type.
	LegacyPrefix = "application/vnd.cnai.model."
	// CNCFPrefix is the prefix of every CNCF ModelPack media type.
	CNCFPrefix = "application/vnd.cncf.model."
	// KitOpsConfig is the config media type of a KitOps ModelKit.
	KitOpsConfig = "application/vnd.kitops.modelkit.config.v1+json"
	// KitOpsPrefix is the prefix of every KitOps layer media type.
	KitOpsPrefix = "application/vnd.kitops.modelkit."
	// DockerModelConfig is the config media type of a Docker model artifact.
	DockerModelConfig = "application/vnd.docker.ai.model.config.v0.1+json"
	// DockerModelConfigV02 is its next version (same fields, more layer kinds).
	DockerModelConfigV02 = "application/vnd.docker.ai.model.config.v0.2+json"
	// DockerModelPrefix is the prefix of every Docker model layer media type.
	DockerModelPrefix = "application/vnd.docker.ai."
)

// Per-file annotations, set on every layer that holds one file.
const (
	// AnnotationFilepath is ModelPack's relative path of the file in the model tree.
	AnnotationFilepath = "org.cncf.model.filepath"
	// LegacyAnnotationFilepath is the pre-CNCF name of AnnotationFilepath.
	LegacyAnnotationFilepath = "org.cnai.model.filepath"
	// AnnotationTitle is the OCI title; CRI-O and oras use it as the file name.
	AnnotationTitle = "org.opencontainers.image.title"
	// AnnotationFileMode is the file's permission bits in octal ("0644"),
	// so a pull restores executables as executables.
	AnnotationFileMode = "io.modelreg.file.mode"
)

// Version metadata, as annotations on the version's manifest. Flat keys keep
// it searchable by any OCI tool and writable with `oras push --annotation`.
const (
	// AnnotationCreated is the OCI creation time (RFC 3339).
	AnnotationCreated = "org.opencontainers.image.created"
	// AnnotationDescription is the OCI human-readable description.
	AnnotationDescription = "org.opencontainers.image.description"

	// AnnotationFramework names the training framework ("pytorch", "sklearn").
	AnnotationFramework = "io.modelreg.framework"
	// AnnotationMetricPrefix prefixes numeric metrics: io.modelreg.metric.accuracy=0.93.
	AnnotationMetricPrefix = "io.modelreg.metric."
	// AnnotationParamPrefix prefixes hyperparameters: io.modelreg.param.lr=3e-4.
	AnnotationParamPrefix = "io.modelreg.param."
	// AnnotationLabelPrefix prefixes free labels: io.modelreg.label.team=fraud.
	AnnotationLabelPrefix = "io.modelreg.label."
	// AnnotationDatasetPrefix prefixes training datasets, numbered from 0:
	// io.modelreg.dataset.0=s3://bucket/train.parquet@sha256:...
	AnnotationDatasetPrefix = "io.modelreg.dataset."
)

// Layer returns the media type of a layer of the given base (LayerWeight ...)
// and encoding (EncodingRaw ...).
func Layer(base, encoding string) string { return base + "." + encoding }

// ModelFormat names the producer family of a model artifactType (or config
// media type, for manifests without an artifactType): "modelpack",
// "modelpack-legacy", "kitops" or "docker-model"; "" when t does not mark a
// model. It is the one test of "is this a model" that the reader, the
// server's gate, the index and the API share: anything a pull would read as
// a model is gated as one.
func ModelFormat(t string) string {
	switch {
	case t == ArtifactTypeModel || t == ModelConfig:
		return "modelpack"
	case strings.HasPrefix(t, LegacyPrefix):
		return "modelpack-legacy"
	case t == KitOpsConfig:
		return "kitops"
	case t == DockerModelConfig || t == DockerModelConfigV02:
		return "docker-model"
	}
	return ""
}

// IsModelArtifactType reports whether an artifactType or config media type
// marks a model that modelreg can read (ModelFormat is not "").
func IsModelArtifactType(t string) bool { return ModelFormat(t) != "" }

// SplitLayer splits a ModelPack layer media type (CNCF or legacy) into its
// kind ("weight", "weight.config", "doc", "code", "dataset") and encoding.
// ok is false for media types that are not ModelPack layers.
func SplitLayer(mediaType string) (kind, encoding string, ok bool) {
	var rest string
	switch {
	case strings.HasPrefix(mediaType, CNCFPrefix):
		rest = strings.TrimPrefix(mediaType, CNCFPrefix)
	case strings.HasPrefix(mediaType, LegacyPrefix):
		rest = strings.TrimPrefix(mediaType, LegacyPrefix)
	default:
		return "", "", false
	}
	i := strings.Index(rest, ".v1.")
	if i <= 0 {
		return "", "", false
	}
	kind, encoding = rest[:i], rest[i+len(".v1."):]
	switch encoding {
	case EncodingRaw, EncodingTar, EncodingTarGzip, EncodingTarZstd:
		return kind, encoding, true
	}
	return "", "", false
}

// Sigstore and cosign formats that modelreg writes and reads for signatures
// and attestations, byte-exact as cosign uses them.
const (
	// CosignSimpleSigning is the layer media type of a legacy cosign
	// signature: the layer blob is the signed simple-signing payload.
	CosignSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	// AnnotationCosignSignature holds the base64 signature on such a layer.
	AnnotationCosignSignature = "dev.cosignproject.cosign/signature"
	// CosignSimpleSigningType is the payload's critical.type.
	CosignSimpleSigningType = "cosign container image signature"
	// ArtifactTypeCosignSignature marks cosign's OCI 1.1 signature referrer
	// (cosign --registry-referrers-mode=oci-1-1).
	ArtifactTypeCosignSignature = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// SigstoreBundle is the artifactType and layer media type of a sigstore
	// bundle referrer (cosign v3's default).
	SigstoreBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// AnnotationBundleContent says what the bundle holds ("dsse-envelope").
	AnnotationBundleContent = "dev.sigstore.bundle.content"
	// AnnotationBundlePredicateType names the bundle statement's predicate type.
	AnnotationBundlePredicateType = "dev.sigstore.bundle.predicateType"
	// DSSEEnvelope is the layer media type of a legacy cosign attestation.
	DSSEEnvelope = "application/vnd.dsse.envelope.v1+json"
	// InTotoPayloadType is the DSSE payloadType of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// InTotoStatementV1 and InTotoStatementV01 are the in-toto statement types.
	InTotoStatementV1  = "https://in-toto.io/Statement/v1"
	InTotoStatementV01 = "https://in-toto.io/Statement/v0.1"
	// PredicateCosignSign is the predicate of a cosign v3 signature statement.
	PredicateCosignSign = "https://sigstore.dev/cosign/sign/v1"
	// OCIEmptyJSON is the media type of the OCI empty config ({}).
	OCIEmptyJSON = "application/vnd.oci.empty.v1+json"
)

// modelreg's own records: referrers of a version.
const (
	// ArtifactTypePromotion marks a promotion record; its one layer (of the
	// same media type) is the record as JSON.
	ArtifactTypePromotion = "application/vnd.modelreg.promotion.v1+json"
	// ArtifactTypeTombstone marks the record of a deleted version; its one
	// layer (a DSSE envelope signed by the server) embeds the deleted manifest.
	ArtifactTypeTombstone = "application/vnd.modelreg.tombstone.v1+json"
	// AnnotationPromotionStage names the stage on a promotion record's
	// manifest, so history readers can filter without fetching the blob.
	AnnotationPromotionStage = "io.modelreg.promotion.stage"
)

// Request headers a modelreg client sends with a stage tag PUT, so the
// record the server writes carries the promoter's reason.
const (
	HeaderReason   = "Modelreg-Reason"
	HeaderActor    = "Modelreg-Actor"
	HeaderRollback = "Modelreg-Rollback"
)

// Lineage records: a referrer of the version holding an in-toto Statement
// v1 whose predicate lists the inputs the version was made from.
const (
	// ArtifactTypeLineage marks a lineage record; its one layer
	// (InTotoPayloadType) is the statement.
	ArtifactTypeLineage = "application/vnd.modelreg.lineage.v1+json"
	// PredicateLineage is the statement's predicateType.
	PredicateLineage = "https://modelreg.dev/lineage/v1"
)

// Evaluations: metrics measured after training, a referrer of the version.
const (
	// ArtifactTypeEvaluation marks an evaluation record; its one layer (of
	// the same media type) is the record as JSON.
	ArtifactTypeEvaluation = "application/vnd.modelreg.evaluation.v1+json"
	// PredicateSLSAProvenanceV1 is what `cosign attest --type slsaprovenance1` writes.
	PredicateSLSAProvenanceV1 = "https://slsa.dev/provenance/v1"
)
