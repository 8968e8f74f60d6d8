//! PLACEHOLDER until the pixel pipeline lands (being written): decode, transcode, render.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    #[error("not an image")]
    NotAnImage,
    #[error("frame {frame} out of range ({frames} frames)")]
    FrameOutOfRange { frame: u32, frames: u32 },
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
}
pub fn can_decode(_ts: &str) -> bool {
    false
}
pub fn transcode_to_explicit_le(_p: &[u8]) -> Result<Vec<u8>, PixelError> {
    Err(PixelError::UnsupportedTransferSyntax(String::new()))
}
pub fn decode_frame(_p: &[u8], _f: u32) -> Result<Vec<u8>, PixelError> {
    Err(PixelError::UnsupportedTransferSyntax(String::new()))
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub frame: Option<u32>,
    pub window: Option<(f64, f64)>,
    pub viewport: Option<(u32, u32)>,
    pub format: Option<ImageFormat>,
    pub quality: Option<u8>,
}
pub fn render(_p: &[u8], _o: &RenderOptions) -> Result<Vec<u8>, PixelError> {
    Err(PixelError::NotAnImage)
}
