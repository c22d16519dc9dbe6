"""Speech in: SenseVoice front end + encoder + projector (user speech), GLM-4-Voice WhisperVQ (speech codes),
and their parameter mappings."""
