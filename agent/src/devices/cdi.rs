//! Container Device Interface specs (to be written by the CDI helper).
