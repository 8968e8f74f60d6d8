//! Model folders: the `.onnx` file and its manifest (being written).

/// A coded concept (PS3.3 8.8): code value, coding scheme designator ("SCT", "DCM"), meaning.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

/// One output label of a model, as the manifest describes it and the SEG writes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelSpec {
    /// Label value in the model's output (1-based for argmax outputs; 1 for a sigmoid output).
    pub value: u32,
    pub name: String,
    /// Display colour as sRGB 0-255; the SEG stores it as CIELab (PS3.3 C.10.7.1.1).
    pub color: [u8; 3],
    /// Segmented Property Category Code Sequence (0062,0003).
    pub category: Code,
    /// Segmented Property Type Code Sequence (0062,000F).
    pub property_type: Code,
}
